"""The systems the benchmark compares: a routing policy, who writes the answer, link settings.

Every system but one runs the same `edge_client` step loop; they differ only in the policy.
The exception is the LLM alone "as a user would call it": one WRITE_ANSWER call through the
same cloud link from an empty transcript (our contract is unary, so it is measured as one
unary call: the same end-to-end latency as a stream; only time-to-first-token would differ).

Families (the names `--systems` takes):
  slm            the SLM writes every step and the answer, no cloud
  llm-one-call   the LLM writes reasoning and answer in one call
  llm-steps      the LLM writes every step (the paper's baseline), through the loop
  glimp-tau      GlimpRouter, first-token entropy >= tau, over a sweep of tau
  glimp-share    GlimpRouter, tau calibrated on the dev set for a target share of cloud steps
  random         each step to the cloud with the probability GlimpRouter reached (matched share)
  step-average   the SLM drafts, the LLM rewrites when the draft's mean entropy >= a threshold
                 calibrated on the dev set to GlimpRouter's reached share
  verify         generate-then-verify (SpecReason's manner): the LLM scores every draft by its
                 mean log-likelihood per token and rewrites it below a threshold, calibrated on
                 the dev set to GlimpRouter's reached share (and any fixed thresholds asked for)
  resend         the best GlimpRouter setting again over a link that resends the whole
                 transcript on every call (the uplink baseline)
  blocking-close (not in "all") every GlimpRouter row again, interleaved with it, over a link that
                 closes each finished context with a blocking round trip before the answer
                 returns, as the loop did before the link's background closer
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from bench.e2e.dev_calibration import DevEntropies
from edge_client.calibrate import Calibration, tau_for_share
from edge_client.config import ANSWER_WRITERS
from edge_client.policies import (
    AlwaysCloud,
    AlwaysLocal,
    Draft,
    EntropyThreshold,
    Judgement,
    RandomShare,
    RoutingPolicy,
    Scorer,
    StepAverageEntropy,
    TargetShare,
    Verdict,
    VerifyByScore,
)
from glimp_common.errors import BadInputError

FAMILIES = (
    "slm", "llm-one-call", "llm-steps", "glimp-tau", "glimp-share", "random", "step-average", "verify",
    "resend",
)
# Asked for by name only: a side-by-side figure, not a row of the paper's table.
EXTRA_FAMILIES = ("blocking-close",)
GLIMP_FAMILIES = ("glimp-tau", "glimp-share")
MATCHED_FAMILIES = ("random", "step-average", "verify")


@dataclass(frozen=True)
class SystemSpec:
    """One row of the comparison."""

    name: str  # unique, short: the table row and the plot label
    family: str  # one of FAMILIES
    make_policy: Callable[[], RoutingPolicy] | None  # fresh policy per run; None: one LLM call
    answer_by: str = "llm"  # who writes the final answer ("llm" as in the paper)
    resend_full: bool = False  # the cloud link resends the whole transcript on every call
    blocking_close: bool = False  # the cloud link closes a context with a blocking round trip
    matched_to: str = ""  # the GlimpRouter row whose reached cloud share this row copies

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise BadInputError("a system needs a name")
        if self.family not in (*FAMILIES, *EXTRA_FAMILIES):
            raise BadInputError(f"unknown system family {self.family!r}; choose from "
                                f"{', '.join((*FAMILIES, *EXTRA_FAMILIES))}")
        if self.answer_by not in ANSWER_WRITERS:
            raise BadInputError(
                f"answer_by must be one of {', '.join(ANSWER_WRITERS)}, got {self.answer_by!r}"
            )

    @property
    def one_call(self) -> bool:
        return self.make_policy is None

    @property
    def uses_llm(self) -> bool:
        if self.make_policy is None:
            return True
        return self.answer_by == "llm" or self.make_policy().may_use_llm


def parse_families(text: str) -> tuple[str, ...]:
    """`--systems a,b,...` (or "all") -> families in the order they run; BadInputError if unknown.

    "all" is every family but the extra ones (`EXTRA_FAMILIES`), which may be added to it.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    every = (*FAMILIES, *EXTRA_FAMILIES)
    unknown = [n for n in names if n not in (*every, "all")]
    if unknown:
        raise BadInputError(f"unknown system(s) {', '.join(unknown)}; choose from all, {', '.join(every)}")
    if not names or "all" in names:
        return (*FAMILIES, *(f for f in EXTRA_FAMILIES if f in names))
    return tuple(f for f in every if f in names)


def baseline_systems(families: Sequence[str]) -> list[SystemSpec]:
    """SLM alone, LLM alone in one call, LLM alone step by step (those of them asked for)."""
    specs = [
        SystemSpec("slm", "slm", AlwaysLocal, answer_by="slm"),
        SystemSpec("llm one-call", "llm-one-call", None),
        SystemSpec("llm steps", "llm-steps", AlwaysCloud),
    ]
    return [s for s in specs if s.family in families]


def threshold_systems(taus: Sequence[float]) -> list[SystemSpec]:
    """GlimpRouter with the paper's threshold on the first token's entropy (nats)."""
    return [SystemSpec(f"glimp tau={tau:g}", "glimp-tau", _threshold(tau)) for tau in taus]


def share_systems(shares: Sequence[float], calibration: Calibration) -> list[SystemSpec]:
    """GlimpRouter with tau read from the dev-set calibration for each target share."""
    return [SystemSpec(f"glimp share={s:g}", "glimp-share", _target_share(s, calibration)) for s in shares]


def matched_systems(glimp_name: str, reached_share: float, dev: DevEntropies | None, seed: int,
                    families: Sequence[str]) -> list[SystemSpec]:
    """Random, step-average and verify set to the cloud share `glimp_name` reached.

    Random takes the share as its probability; step-average and verify take the threshold that
    sends that share of the dev set's SLM steps to the LLM (calibrated on the dev problems,
    never on the test ones).
    """
    label = glimp_name.removeprefix("glimp ")
    specs = []
    if "random" in families:
        specs.append(SystemSpec(f"random @{label}", "random", _random(reached_share, seed),
                                matched_to=glimp_name))
    if "step-average" in families and dev is not None:
        tau = tau_for_share(dev.step_mean_nats, reached_share)
        specs.append(SystemSpec(f"step-avg @{label}", "step-average", _step_average(tau),
                                matched_to=glimp_name))
    if "verify" in families and dev is not None and dev.llm_scores:
        threshold = dev.verify_threshold(reached_share)
        specs.append(SystemSpec(f"verify @{label}", "verify", _verify(threshold), matched_to=glimp_name))
    return specs


def verify_systems(thresholds: Sequence[float]) -> list[SystemSpec]:
    """Generate-then-verify with each mean log-probability threshold (nats per token, <= 0)."""
    return [SystemSpec(f"verify lp<{t:g}", "verify", _verify(t)) for t in thresholds]


def resend_twin(spec: SystemSpec) -> SystemSpec:
    """The same system over a link that resends the whole transcript on every call."""
    return replace(spec, name=f"{spec.name} full-resend", family="resend", resend_full=True)


BLOCKING_CLOSE_SUFFIX = " blocking-close"


def blocking_close_twin(spec: SystemSpec) -> SystemSpec:
    """The same system over a link whose context close is a blocking round trip (the old loop)."""
    return replace(spec, name=spec.name + BLOCKING_CLOSE_SUFFIX, family="blocking-close", blocking_close=True)


# Factories as closures over validated parameters: a policy with state (random) is built fresh
# for every run, and a bad parameter fails here, before any model work.


def _threshold(tau: float) -> Callable[[], RoutingPolicy]:
    EntropyThreshold(tau)
    return lambda: EntropyThreshold(tau)


def _target_share(share: float, calibration: Calibration) -> Callable[[], RoutingPolicy]:
    policy = TargetShare.from_calibration(calibration, share)
    return lambda: policy


def _random(share: float, seed: int) -> Callable[[], RoutingPolicy]:
    RandomShare(share, seed)
    return lambda: RandomShare(share, seed)


def _step_average(tau: float) -> Callable[[], RoutingPolicy]:
    StepAverageEntropy(tau)
    return lambda: StepAverageEntropy(tau)


@dataclass(frozen=True)
class _VerifyNonEmpty(VerifyByScore):
    """VerifyByScore that keeps an empty draft without asking the LLM.

    An empty step has log-likelihood 0 (the in-process LLM scores it so), but the cloud link
    refuses a SCORE call with an empty candidate; without this the run would stop at the first
    step the SLM leaves empty.
    """

    def after_draft(self, draft: Draft, scorer: Scorer) -> Judgement:
        if not draft.text:
            return Judgement(Verdict.ACCEPT, 0.0, "llm_mean_logprob")
        return super().after_draft(draft, scorer)


def _verify(threshold: float) -> Callable[[], RoutingPolicy]:
    _VerifyNonEmpty(threshold)
    return lambda: _VerifyNonEmpty(threshold)
