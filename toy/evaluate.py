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

from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm.manifest import MANIFEST_FILE
from toy.metrics import accuracy, auroc
from toy.scoring import StepScore
from toy.task import Problem, parse_answer

logger = logging.getLogger(__name__)

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
