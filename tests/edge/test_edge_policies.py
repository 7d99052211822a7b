"""Routing policies on made-up signals: decisions, validation, factories."""

from __future__ import annotations

import math

import pytest

from edge_client.calibrate import Calibration
from edge_client.policies import (
    AlwaysCloud,
    AlwaysLocal,
    Draft,
    EntropyThreshold,
    Probe,
    RandomShare,
    Route,
    StepAverageEntropy,
    TargetShare,
    Verdict,
    VerifyByScore,
    make_policy,
)
from glimp_common.errors import BadInputError


def probe(entropy: float, index: int = 0) -> Probe:
    return Probe(step_index=index, entropy_nats=entropy, token_id=7)


def calibration(entropies: list[float], share: float = 0.25) -> Calibration:
    from edge_client.calibrate import tau_for_share

    ordered = tuple(sorted(entropies))
    return Calibration(tau_for_share(ordered, share), share, len(ordered), "f" * 64, ordered)


def test_threshold_routes_at_or_above_tau_to_the_cloud() -> None:
    policy = EntropyThreshold(0.9)
    assert policy.before_step(probe(0.89)).route == Route.EDGE
    assert policy.before_step(probe(0.9)).route == Route.CLOUD  # `>=`, as the official code
    decision = policy.before_step(probe(2.5))
    assert (decision.route, decision.signal, decision.signal_name) == (
        Route.CLOUD,
        2.5,
        "first_token_entropy",
    )


def test_paper_default_tau_is_0_9() -> None:
    assert EntropyThreshold().tau == 0.9


@pytest.mark.parametrize("tau", [-0.1, math.nan, math.inf, "1", True, None])
def test_bad_tau_is_refused(tau: object) -> None:
    with pytest.raises(BadInputError, match="tau"):
        EntropyThreshold(tau)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="tau"):
        StepAverageEntropy(tau)  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [-0.01, 1.01, math.nan, "0.5"])
def test_share_outside_unit_interval_is_refused(share: object) -> None:
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        RandomShare(share)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        TargetShare.from_calibration(calibration([0.1, 0.2]), share)  # type: ignore[arg-type]


def test_fixed_policies() -> None:
    assert AlwaysLocal().before_step(probe(9.0)).route == Route.EDGE
    assert AlwaysCloud().before_step(probe(0.0)).route == Route.CLOUD
    assert AlwaysLocal.may_use_llm is False and AlwaysCloud.may_use_llm is True


def test_random_share_hits_its_share_and_is_reproducible() -> None:
    policy = RandomShare(0.3, seed=5)
    routes = [policy.before_step(probe(1.0, i)).route for i in range(2000)]
    again = RandomShare(0.3, seed=5)
    assert routes == [again.before_step(probe(1.0, i)).route for i in range(2000)]
    share = routes.count(Route.CLOUD) / len(routes)
    assert 0.27 < share < 0.33
    assert all(RandomShare(0.0).before_step(probe(5.0)).route == Route.EDGE for _ in range(50))
    assert all(RandomShare(1.0).before_step(probe(0.0)).route == Route.CLOUD for _ in range(50))


def test_step_average_drafts_then_judges_the_mean_entropy() -> None:
    policy = StepAverageEntropy(tau=1.0)
    assert policy.before_step(probe(3.0)).route == Route.DRAFT

    def no_scorer(_: str) -> float:
        raise AssertionError("step-average never asks the LLM")

    calm = policy.after_draft(Draft("12+3=15", (2.0, 0.1, 0.1, 0.1)), no_scorer)
    assert calm.verdict == Verdict.ACCEPT and calm.signal == pytest.approx(0.575)
    unsure = policy.after_draft(Draft("x", (2.0, 1.5)), no_scorer)
    assert unsure.verdict == Verdict.REWRITE and unsure.signal_name == "step_mean_entropy"


def test_step_average_rewrites_a_draft_whose_mean_is_exactly_tau() -> None:
    # `>=`, as the first-token threshold: a mean of exactly tau goes to the LLM. 0.5 and 1.5
    # average to 1.0 exactly in binary floating point, so no rounding blurs the boundary.
    policy = StepAverageEntropy(tau=1.0)
    at_tau = policy.after_draft(Draft("12", (0.5, 1.5)), lambda _: 0.0)
    assert at_tau.signal == 1.0 and at_tau.verdict == Verdict.REWRITE
    below = policy.after_draft(Draft("12", (0.5, 1.4999)), lambda _: 0.0)
    assert below.verdict == Verdict.ACCEPT


def test_verify_by_score_rewrites_drafts_the_llm_finds_unlikely() -> None:
    policy = VerifyByScore(threshold=-1.0)
    scored: list[str] = []

    def scorer(text: str) -> float:
        scored.append(text)
        return -0.2 if text == "good" else -3.0

    assert policy.before_step(probe(0.1)).route == Route.DRAFT
    assert policy.after_draft(Draft("good", (0.1,)), scorer).verdict == Verdict.ACCEPT
    bad = policy.after_draft(Draft("bad", (0.1,)), scorer)
    assert (bad.verdict, bad.signal, bad.signal_name) == (Verdict.REWRITE, -3.0, "llm_mean_logprob")
    assert scored == ["good", "bad"]


@pytest.mark.parametrize("threshold", [0.5, math.nan, -math.inf])
def test_verify_threshold_must_be_a_finite_log_probability(threshold: float) -> None:
    with pytest.raises(BadInputError, match="log-probability"):
        VerifyByScore(threshold)


def test_policies_that_never_draft_cannot_judge_one() -> None:
    with pytest.raises(NotImplementedError):
        EntropyThreshold().after_draft(Draft("x", (1.0,)), lambda _: 0.0)


def test_target_share_takes_tau_from_the_calibration() -> None:
    entropies = [0.05 * i for i in range(20)]  # 0.0 .. 0.95
    policy = TargetShare.from_calibration(calibration(entropies, 0.25), 0.25)
    routed = [policy.before_step(probe(h)).route for h in entropies]
    assert routed.count(Route.CLOUD) == 5
    # another share from the same file
    other = TargetShare.from_calibration(calibration(entropies, 0.25), 0.5)
    assert [other.before_step(probe(h)).route for h in entropies].count(Route.CLOUD) == 10


def test_make_policy_builds_each_cli_name_and_explains_what_is_missing() -> None:
    cal = calibration([0.1, 0.2, 0.3, 0.4])
    assert make_policy("threshold", tau=1.2) == EntropyThreshold(1.2)
    assert make_policy("share", calibration=cal) == TargetShare.from_calibration(cal, cal.target_share)
    assert make_policy("share", share=0.5, calibration=cal) == TargetShare.from_calibration(cal, 0.5)
    assert make_policy("random", share=0.4, seed=3) == RandomShare(0.4, 3)
    assert make_policy("local") == AlwaysLocal() and make_policy("cloud") == AlwaysCloud()
    assert make_policy("step-average", tau=0.5) == StepAverageEntropy(0.5)
    assert make_policy("verify", score_threshold=-2.0) == VerifyByScore(-2.0)
    with pytest.raises(BadInputError, match="glimp calibrate"):
        make_policy("share")
    with pytest.raises(BadInputError, match="--share"):
        make_policy("random")
    with pytest.raises(BadInputError, match="unknown policy"):
        make_policy("oracle")


# ---- what the trace records of a decision, and the factory's defaults (found by `make mutation`) ----


def test_target_share_records_the_entropy_it_compared() -> None:
    policy = TargetShare.from_calibration(calibration([0.1, 0.2, 0.3, 1.5]), 0.25)
    decision = policy.before_step(probe(1.7))
    assert (decision.route, decision.signal) == (Route.CLOUD, 1.7)
    assert decision.signal_name == "first_token_entropy"
    assert policy.calibration_steps == 4 and "calibrated on 4 steps" in policy.describe()


def test_random_share_records_its_draw_and_keeps_a_draw_equal_to_the_share_local() -> None:
    import numpy as np

    first_draw = float(np.random.default_rng(5).random())
    decision = RandomShare(first_draw, seed=5).before_step(probe(0.0))
    # A draw equal to the share is not below it: the step stays on the edge.
    assert (decision.route, decision.signal, decision.signal_name) == (Route.EDGE, first_draw, "uniform_draw")


def test_make_policy_defaults_are_the_papers_tau_and_seed_0() -> None:
    import numpy as np

    assert make_policy("threshold") == EntropyThreshold(0.9)
    draw = make_policy("random", share=0.5).before_step(probe(0.0)).signal
    assert draw == float(np.random.default_rng(0).random())


def test_make_policy_says_what_is_missing() -> None:
    with pytest.raises(BadInputError, match="needs a calibration file: run `glimp calibrate` first"):
        make_policy("share")
    with pytest.raises(BadInputError, match=r"needs --share \(the probability of a cloud step\)"):
        make_policy("random")
    with pytest.raises(BadInputError, match="choose one of threshold, share, local, cloud"):
        make_policy("nope")


def test_a_policy_that_never_drafts_says_so_when_asked_to_judge() -> None:
    with pytest.raises(NotImplementedError, match="cloud never drafts"):
        AlwaysCloud().after_draft(Draft("x", (0.1,)), lambda text: 0.0)
