"""Routing policies: who writes the next reasoning step.

The loop asks a policy twice at most per step:
- `before_step(probe)`, once the SLM has glimpsed the step's first token: EDGE (the SLM writes
  the step, keeping the probe), CLOUD (the LLM writes it, the probe is discarded) or DRAFT (the
  SLM writes the whole step first);
- `after_draft(draft, scorer)`, for DRAFT only: ACCEPT the SLM's draft or REWRITE (the LLM writes
  the step instead and the draft's tokens count as wasted).

Every policy validates its parameters at construction, so a bad tau or share fails before any
model work starts.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

import numpy as np

from glimp_common.errors import BadInputError

# The mean log-probability per token (nats, <= 0) that the LLM gives a candidate step.
Scorer = Callable[[str], float]


class Route(StrEnum):
    EDGE = "edge"  # the SLM writes the step from the probe token
    CLOUD = "cloud"  # the LLM writes the step
    DRAFT = "draft"  # the SLM writes the step, then the policy judges it (`after_draft`)


class Verdict(StrEnum):
    ACCEPT = "accept"  # keep the SLM's draft
    REWRITE = "rewrite"  # the LLM writes the step instead


@dataclass(frozen=True)
class Probe:
    """What the SLM saw at the start of a step."""

    step_index: int  # 0-based
    entropy_nats: float  # of the first token's distribution, whole vocabulary, temperature 1
    token_id: int  # the probe token, sampled with the step's settings


@dataclass(frozen=True)
class Decision:
    """A policy's answer before a step, with the number it compared (for the trace)."""

    route: Route
    signal: float | None = None  # None for fixed policies
    signal_name: str = ""


@dataclass(frozen=True)
class Draft:
    """A step the SLM wrote in full before the policy decided."""

    text: str
    entropies_nats: tuple[float, ...]  # per sampled token, the first one is the probe's

    @property
    def mean_entropy_nats(self) -> float:
        return float(np.mean(self.entropies_nats)) if self.entropies_nats else 0.0


@dataclass(frozen=True)
class Judgement:
    """A policy's verdict on a draft, with the number it compared."""

    verdict: Verdict
    signal: float
    signal_name: str


class RoutingPolicy(ABC):
    """Base of every policy. Subclasses are frozen dataclasses validated in `__post_init__`."""

    name: ClassVar[str]
    may_use_llm: ClassVar[bool] = True  # False: the policy never sends a step to the LLM

    @abstractmethod
    def before_step(self, probe: Probe) -> Decision:
        """Route the step whose first token was just glimpsed."""

    def after_draft(self, draft: Draft, scorer: Scorer) -> Judgement:
        """Judge a draft; only policies that answer DRAFT are asked."""
        raise NotImplementedError(f"{self.name} never drafts, so it cannot judge a draft")

    def describe(self) -> str:
        """One line for logs and the summary."""
        return self.name


def check_tau(tau: float, what: str = "tau") -> None:
    """Reject a threshold that is not a finite number >= 0 (entropy is never negative)."""
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau) or tau < 0:
        raise BadInputError(f"{what} must be a finite number of nats >= 0, got {tau!r}")


def check_share(share: float) -> None:
    """Reject a share of cloud steps outside [0, 1]."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise BadInputError(f"share of cloud steps must be a number in [0, 1], got {share!r}")


@dataclass(frozen=True)
class EntropyThreshold(RoutingPolicy):
    """The paper: the LLM writes the step when the first token's entropy H >= tau (nats)."""

    tau: float = 0.9
    name: ClassVar[str] = "threshold"

    def __post_init__(self) -> None:
        check_tau(self.tau)

    def before_step(self, probe: Probe) -> Decision:
        # `>=` as in the official code (the paper's text says "exceeds").
        route = Route.CLOUD if probe.entropy_nats >= self.tau else Route.EDGE
        return Decision(route, probe.entropy_nats, "first_token_entropy")

    def describe(self) -> str:
        return f"threshold (tau {self.tau:g} nats)"


class ShareCalibration(Protocol):
    """What the share policy is made from: tau for any share (`edge_client.calibrate.Calibration`)."""

    @property
    def target_share(self) -> float: ...

    @property
    def steps(self) -> int: ...

    def tau_for(self, share: float) -> float: ...


@dataclass(frozen=True)
class TargetShare(RoutingPolicy):
    """Send about `share` of the steps to the LLM, with the tau a calibration of this SLM gives it.

    Make it with `TargetShare.from_calibration(calibration, share)`.
    """

    share: float
    tau: float  # nats, from the calibration
    calibration_steps: int  # steps the calibration's entropies come from
    name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share(self.share)
        check_tau(self.tau)

    @classmethod
    def from_calibration(cls, calibration: ShareCalibration, share: float) -> TargetShare:
        """The policy for `share`, with tau resolved from `calibration` now."""
        check_share(share)
        return cls(share, calibration.tau_for(share), calibration.steps)

    def before_step(self, probe: Probe) -> Decision:
        route = Route.CLOUD if probe.entropy_nats >= self.tau else Route.EDGE
        return Decision(route, probe.entropy_nats, "first_token_entropy")

    def describe(self) -> str:
        steps = self.calibration_steps
        return f"share {self.share:.0%} of steps (tau {self.tau:.4g} nats, calibrated on {steps} steps)"


@dataclass(frozen=True)
class AlwaysLocal(RoutingPolicy):
    """The SLM writes every step (the SLM-only baseline; also what calibration runs)."""

    name: ClassVar[str] = "local"
    may_use_llm: ClassVar[bool] = False

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.EDGE)


@dataclass(frozen=True)
class AlwaysCloud(RoutingPolicy):
    """The LLM writes every step (the LLM-only baseline, through the same loop)."""

    name: ClassVar[str] = "cloud"

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.CLOUD)


@dataclass(frozen=True)
class RandomShare(RoutingPolicy):
    """Each step goes to the LLM with probability `share`: the paper's random baseline."""

    share: float
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False, compare=False)
    name: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        check_share(self.share)
        object.__setattr__(self, "_rng", np.random.default_rng(self.seed))

    def before_step(self, probe: Probe) -> Decision:
        draw = float(self._rng.random())
        return Decision(Route.CLOUD if draw < self.share else Route.EDGE, draw, "uniform_draw")

    def describe(self) -> str:
        return f"random (share {self.share:.0%}, seed {self.seed})"


@dataclass(frozen=True)
class StepAverageEntropy(RoutingPolicy):
    """The paper's ablation: the SLM writes the step, then the LLM rewrites it if the mean H >= tau."""

    tau: float = 0.9
    name: ClassVar[str] = "step-average"

    def __post_init__(self) -> None:
        check_tau(self.tau)

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.DRAFT, probe.entropy_nats, "first_token_entropy")

    def after_draft(self, draft: Draft, scorer: Scorer) -> Judgement:
        mean = draft.mean_entropy_nats
        return Judgement(Verdict.REWRITE if mean >= self.tau else Verdict.ACCEPT, mean, "step_mean_entropy")

    def describe(self) -> str:
        return f"step-average entropy (tau {self.tau:g} nats)"


@dataclass(frozen=True)
class VerifyByScore(RoutingPolicy):
    """SpecReason-style generate-then-verify: the SLM drafts, the LLM scores the draft by its mean
    log-probability per token, and rewrites the step when the score is below `threshold`."""

    threshold: float = -1.0  # nats per token; a log-probability, so <= 0
    name: ClassVar[str] = "verify"

    def __post_init__(self) -> None:
        value = self.threshold
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value > 0:
            raise BadInputError(
                f"verify threshold is a mean log-probability per token: a finite number <= 0, got {value!r}"
            )

    def before_step(self, probe: Probe) -> Decision:
        return Decision(Route.DRAFT, probe.entropy_nats, "first_token_entropy")

    def after_draft(self, draft: Draft, scorer: Scorer) -> Judgement:
        # An empty draft scores 0.0 (the LLM protocol's rule, `empty_score_reply`): kept as is.
        score = scorer(draft.text)
        verdict = Verdict.REWRITE if score < self.threshold else Verdict.ACCEPT
        return Judgement(verdict, score, "llm_mean_logprob")

    def describe(self) -> str:
        return f"verify by LLM score (rewrite below {self.threshold:g} nats/token)"


POLICY_NAMES = ("threshold", "share", "local", "cloud", "random", "step-average", "verify")


def make_policy(
    name: str, *, tau: float = 0.9, share: float | None = None, calibration: ShareCalibration | None = None,
    score_threshold: float = -1.0, seed: int = 0,
) -> RoutingPolicy:
    """Build a policy from its CLI name; raises BadInputError naming what is missing."""
    if name == "threshold":
        return EntropyThreshold(tau)
    if name == "share":
        if calibration is None:
            raise BadInputError("the share policy needs a calibration file: run `glimp calibrate` first")
        return TargetShare.from_calibration(calibration, calibration.target_share if share is None else share)
    if name == "random":
        if share is None:
            raise BadInputError("the random policy needs --share (the probability of a cloud step)")
        return RandomShare(share, seed)
    simple: dict[str, Callable[[], RoutingPolicy]] = {
        "local": AlwaysLocal, "cloud": AlwaysCloud,
        "step-average": lambda: StepAverageEntropy(tau), "verify": lambda: VerifyByScore(score_threshold),
    }
    if name not in simple:
        raise BadInputError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    return simple[name]()
