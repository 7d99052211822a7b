"""Calibration on the dev problems: what the matched-share systems need, never the test set.

One pass of the SLM alone over the dev problems records, for every step it writes:
- the entropy of the step's first token (GlimpRouter's signal: the target-share policy);
- the mean entropy over the step's tokens (the step-average policy's signal);
- when generate-then-verify is planned, the LLM's mean log-probability per token of the step
  (its signal; one SCORE call per step, nothing is rewritten).
The SLM writes the same steps it would alone: a recording policy drafts every step and keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from bench.e2e.problems import BenchProblem
from edge_client.calibrate import Calibration, slm_fingerprint, tau_for_share
from edge_client.config import RouterConfig, StepSettings
from edge_client.llm_backend import LLMBackend
from edge_client.loop import EdgeRouter
from edge_client.policies import Decision, Draft, Judgement, Probe, Route, RoutingPolicy, Scorer, Verdict
from glimp_common.errors import BadInputError
from onnx_lm import CausalLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Recorder(RoutingPolicy):
    """Drafts every step, keeps every draft, and records its signals (the lists fill up as it runs)."""

    score: bool  # ask the LLM for its score of each draft
    step_means: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    name: ClassVar[str] = "dev-recorder"

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.DRAFT, probe.entropy_nats, "first_token_entropy")

    def after_draft(self, draft: Draft, scorer: Scorer) -> Judgement:
        self.step_means.append(draft.mean_entropy_nats)
        if self.score:
            # An empty step has log-likelihood 0; the cloud link refuses to score an empty text.
            self.scores.append(scorer(draft.text) if draft.text else 0.0)
        return Judgement(Verdict.ACCEPT, draft.mean_entropy_nats, "step_mean_entropy")


@dataclass(frozen=True)
class DevEntropies:
    """The signals of every SLM step on the dev set (nats; scores in nats per token, <= 0)."""

    first_token_nats: tuple[float, ...]
    step_mean_nats: tuple[float, ...]
    llm_scores: tuple[float, ...]  # empty when not measured
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

    def verify_threshold(self, share: float) -> float:
        """The score threshold below which `share` of the dev steps score (they would be rewritten)."""
        if not self.llm_scores:
            raise BadInputError("no LLM scores were measured on the dev set (verify was not planned)")
        ordered = np.sort(np.asarray(self.llm_scores, dtype=np.float64))
        rewrite = int(round(share * ordered.size))
        if rewrite >= ordered.size:
            return 0.0
        # `score < threshold` rewrites exactly the `rewrite` lowest scores (ties aside).
        threshold = ordered[rewrite] if rewrite else np.nextafter(ordered[0], -np.inf)
        return float(min(threshold, 0.0))

    def summary(self) -> dict[str, float | int | None]:
        first, mean = np.asarray(self.first_token_nats), np.asarray(self.step_mean_nats)
        scores = np.asarray(self.llm_scores)
        return {
            "questions": self.questions, "steps": len(first),
            "first_token_mean_nats": float(first.mean()), "step_mean_mean_nats": float(mean.mean()),
            "llm_score_mean_nats_per_token": float(scores.mean()) if scores.size else None,
        }


def measure_dev(slm: CausalLM, llm: LLMBackend, problems: Sequence[BenchProblem], steps: StepSettings,
                seed: int, *, score: bool, on_problem: Callable[[], None] | None = None) -> DevEntropies:
    """Run the SLM alone over `problems` (no answer) and record the signals of every step."""
    recorder = _Recorder(score)
    router = EdgeRouter(slm, llm, RouterConfig(policy=recorder, steps=steps, answer_by="none"))
    first: list[float] = []
    for index, problem in enumerate(problems):
        run = router.answer(problem.question, rng=problem_rng(seed, index))
        first.extend(step.entropy_nats for step in run.steps)
        if on_problem is not None:
            on_problem()
    log.info("dev pass: %d problems, %d SLM steps", len(problems), len(first))
    return DevEntropies(tuple(first), tuple(recorder.step_means), tuple(recorder.scores), len(problems))


def problem_rng(seed: int, index: int) -> np.random.Generator:
    """The SLM's random stream for one problem: the same for every system under a seed."""
    return np.random.default_rng([seed, index])
