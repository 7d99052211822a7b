"""Teacher-forced scoring of toy reference steps, shared by the torch and ONNX evaluation backends.

Kept apart from `toy.evaluate` (which picks a backend) so that the backends import it without
importing the module that imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onnx_lm.sampling import entropy_nats
from toy.task import STEP_DELIMITER, Problem, prompt_text, solution_text

MAX_NEW_TOKENS = 96  # longest toy solution is ~61 characters; the rest is room for rambling


@dataclass(frozen=True)
class StepScore:
    """One reference step scored under teacher forcing."""

    problem_id: str
    step_index: int  # 0-based
    entropy_nats: float  # entropy of the distribution of the step's first token
    correct: bool  # greedy decoding from the reference prefix reproduces the step


def reference_text(problem: Problem) -> str:
    return prompt_text(problem.question) + solution_text(problem)


def step_spans(problem: Problem) -> list[tuple[int, int]]:
    """(first token index, token count incl. the delimiter) of each reference step.

    The toy vocabulary has one token per character, so token and character offsets agree.
    """
    spans, offset = [], len(prompt_text(problem.question))
    for step in problem.steps:
        spans.append((offset, len(step) + len(STEP_DELIMITER)))
        offset += len(step) + len(STEP_DELIMITER)
    return spans


def score_steps(problem: Problem, ids: Sequence[int], logits: NDArray[np.floating]) -> list[StepScore]:
    """Score every reference step from the logits [len(ids), vocab] of one teacher-forced pass."""
    predicted = np.asarray(logits).argmax(axis=-1)
    scores = []
    for index, (start, length) in enumerate(step_spans(problem)):
        span = range(start, start + length)
        correct = all(int(predicted[i - 1]) == ids[i] for i in span)
        scores.append(StepScore(problem.id, index, entropy_nats(logits[start - 1]), correct))
    return scores
