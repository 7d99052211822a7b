"""Acceptance figures of a toy model: greedy exact-answer accuracy and the entropy signal.

Two backends, one scoring: a Hugging Face checkpoint under torch (for training-time checks) and
an exported ONNX folder under `onnx_lm` (for the shipped pair). Both hand full-sequence logits
to the same numpy code.

The entropy signal is measured with teacher forcing: each problem's reference text is fed once;
for every reference step, the entropy of the next-token distribution at the step's first token
is its score, and the step counts as wrong when greedy decoding from the reference prefix would
not reproduce it (some argmax along the step, delimiter included, differs from the reference:
with teacher forcing that is exactly when greedy decoding leaves the reference path).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from onnx_lm.errors import BadInputError, ModelContractError
from onnx_lm.manifest import MANIFEST_FILE
from onnx_lm.sampling import entropy_nats
from toy.metrics import accuracy, auroc
from toy.task import STEP_DELIMITER, Problem, parse_answer, prompt_text, solution_text

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS = 96  # longest toy solution is ~61 characters; the rest is room for rambling


@dataclass(frozen=True)
class StepScore:
    """One reference step scored under teacher forcing."""

    problem_id: str
    step_index: int  # 0-based
    entropy_nats: float  # entropy of the distribution of the step's first token
    correct: bool  # greedy decoding from the reference prefix reproduces the step


@dataclass(frozen=True)
class EvalFigures:
    """What `evaluate` measured on one model."""

    problems: int
    accuracy: float  # share of exact final answers, greedy decoding
    steps: int  # reference steps scored with teacher forcing
    wrong_steps: int
    entropy_auroc: float | None  # first-token entropy ranking wrong steps above right ones
    mean_entropy_right_nats: float | None
    mean_entropy_wrong_nats: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def summarize(
    problems: Sequence[Problem], solutions: Sequence[str], steps: Sequence[StepScore]
) -> EvalFigures:
    """Accuracy of `solutions` and the entropy separation of `steps`."""
    answers = [parse_answer(text) for text in solutions]
    right = [s.entropy_nats for s in steps if s.correct]
    wrong = [s.entropy_nats for s in steps if not s.correct]
    return EvalFigures(
        problems=len(problems),
        accuracy=accuracy(answers, [p.answer for p in problems]),
        steps=len(steps),
        wrong_steps=len(wrong),
        entropy_auroc=auroc([s.entropy_nats for s in steps], [not s.correct for s in steps])
        if right and wrong
        else None,
        mean_entropy_right_nats=float(np.mean(right)) if right else None,
        mean_entropy_wrong_nats=float(np.mean(wrong)) if wrong else None,
    )


def evaluate(folder: Path, problems: Sequence[Problem], *, device: str = "cpu") -> EvalFigures:
    """Greedy accuracy and teacher-forced entropy AUROC of the model in `folder`.

    `folder` is an exported ONNX model folder (has manifest.json; run under `onnx_lm`) or a
    Hugging Face checkpoint (run under torch on `device`).
    """
    folder = Path(folder)
    if not problems:
        raise BadInputError("no problems to evaluate on; pass a non-empty JSONL file")
    if (folder / MANIFEST_FILE).is_file():
        from toy.evaluate_onnx import onnx_solutions_and_scores

        solutions, steps = onnx_solutions_and_scores(folder, problems)
    elif (folder / "config.json").is_file():
        from toy.evaluate_torch import torch_solutions_and_scores

        solutions, steps = torch_solutions_and_scores(folder, problems, device=device)
    else:
        raise ModelContractError(
            f"{folder} is neither an exported model folder (manifest.json) nor a Hugging Face "
            "checkpoint (config.json); give the output of `glimp toy train` or `glimp toy export`"
        )
    return summarize(problems, solutions, steps)
