"""Calibration on the dev problems: what the matched-share systems need, never the test set.

One pass of the SLM alone over the dev problems gives, for every step it writes, the entropy of
the step's first token (GlimpRouter's signal, for the target-share policy) and the mean entropy
over the step's tokens (the step-average policy's signal). The SLM writes the same steps it would
alone: the pass drafts each step under the step-average policy with a threshold no step reaches,
so the LLM is never called (its conversation is opened lazily and never used).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.problems import BenchProblem
from edge_client.calibrate import Calibration, slm_fingerprint, tau_for_share
from edge_client.config import RouterConfig, StepSettings
from edge_client.llm_backend import LLMBackend
from edge_client.loop import EdgeRouter
from edge_client.policies import StepAverageEntropy
from onnx_lm import CausalLM
from onnx_lm.errors import BadInputError

log = logging.getLogger(__name__)

_NEVER_NATS = 1e9  # a step-average threshold no step reaches: every draft is kept


@dataclass(frozen=True)
class DevEntropies:
    """Per SLM step on the dev set: first-token entropy and mean entropy over the step, in nats."""

    first_token_nats: tuple[float, ...]
    step_mean_nats: tuple[float, ...]
    questions: int

    def __post_init__(self) -> None:
        if not self.first_token_nats or len(self.first_token_nats) != len(self.step_mean_nats):
            raise BadInputError("the dev pass produced no SLM steps; check the dev problem file")

    def calibration(self, slm: CausalLM, share: float) -> Calibration:
        """The target-share calibration these entropies give (as `glimp calibrate` would)."""
        ordered = tuple(sorted(self.first_token_nats))
        return Calibration(
            tau=tau_for_share(ordered, share), target_share=share, steps=len(ordered),
            slm_fingerprint=slm_fingerprint(slm.folder), entropies_nats=ordered, questions=self.questions,
        )

    def summary(self) -> dict[str, float | int]:
        first, mean = np.asarray(self.first_token_nats), np.asarray(self.step_mean_nats)
        return {
            "questions": self.questions, "steps": len(first),
            "first_token_mean_nats": float(first.mean()), "step_mean_mean_nats": float(mean.mean()),
        }


def measure_dev(slm: CausalLM, llm: LLMBackend, problems: Sequence[BenchProblem], steps: StepSettings,
                seed: int, on_problem: Callable[[], None] | None = None) -> DevEntropies:
    """Run the SLM alone over `problems` (no answer) and collect both entropies of every step."""
    config = RouterConfig(policy=StepAverageEntropy(_NEVER_NATS), steps=steps, answer_by="none")
    router = EdgeRouter(slm, llm, config)
    first, mean = [], []
    for index, problem in enumerate(problems):
        run = router.answer(problem.question, rng=problem_rng(seed, index))
        for step in run.steps:
            first.append(step.entropy_nats)
            mean.append(float(step.signal if step.signal is not None else step.entropy_nats))
        if on_problem is not None:
            on_problem()
    log.info("dev pass: %d problems, %d SLM steps", len(problems), len(first))
    return DevEntropies(tuple(first), tuple(mean), len(problems))


def problem_rng(seed: int, index: int) -> np.random.Generator:
    """The SLM's random stream for one problem: the same for every system under a seed."""
    return np.random.default_rng([seed, index])
