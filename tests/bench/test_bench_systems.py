"""System definitions: family names, matched shares, fresh policies, the verify baseline's empty drafts."""

from __future__ import annotations

import pytest

from bench.e2e.dev_calibration import DevEntropies
from bench.e2e.runner import BenchPlan
from bench.e2e.systems import (
    FAMILIES,
    SystemSpec,
    baseline_systems,
    blocking_close_twin,
    matched_systems,
    parse_families,
    resend_twin,
    threshold_systems,
    verify_systems,
)
from edge_client.policies import (
    Draft,
    Probe,
    RandomShare,
    Route,
    RoutingPolicy,
    StepAverageEntropy,
    Verdict,
    VerifyByScore,
)
from glimp_common.errors import BadInputError


def policy_of(spec: SystemSpec) -> RoutingPolicy:
    assert spec.make_policy is not None, f"{spec.name} runs no policy"
    return spec.make_policy()


def test_parse_families_keeps_the_run_order_and_names_unknown_ones() -> None:
    assert parse_families("all") == FAMILIES
    assert parse_families("glimp-tau, slm") == ("slm", "glimp-tau")
    with pytest.raises(BadInputError, match="glimp-taus"):
        parse_families("slm,glimp-taus")


def test_baselines_and_sweeps() -> None:
    names = [s.name for s in baseline_systems(FAMILIES)]
    assert names == ["slm", "llm one-call", "llm steps"]
    slm, one_call, steps = baseline_systems(FAMILIES)
    assert not slm.uses_llm and one_call.one_call and one_call.uses_llm and steps.make_policy is not None
    assert policy_of(steps).before_step(Probe(0, 0.0, 1)).route == Route.CLOUD
    glimp = threshold_systems([0.3])[0]
    assert policy_of(glimp).before_step(Probe(0, 0.3, 1)).route == Route.CLOUD  # >= as in the code
    twin = resend_twin(glimp)
    assert twin.resend_full and twin.family == "resend" and twin.name == "glimp tau=0.3 full-resend"
    with pytest.raises(BadInputError, match="tau"):
        threshold_systems([-1.0])


def test_matched_systems_copy_the_reached_share() -> None:
    dev = DevEntropies(first_token_nats=(0.5,) * 10, step_mean_nats=tuple(0.1 * i for i in range(10)),
                       llm_scores=tuple(-0.1 * i for i in range(10)), questions=2)
    rand, avg, verify = matched_systems("glimp share=0.2", 0.3, dev, seed=5, families=FAMILIES)
    assert rand.matched_to == avg.matched_to == verify.matched_to == "glimp share=0.2"
    assert verify.name == "verify @share=0.2"
    judge = policy_of(verify)
    assert isinstance(judge, VerifyByScore) and judge.threshold == pytest.approx(-0.6)  # 3 of 10 below
    first, second = policy_of(rand), policy_of(rand)
    assert isinstance(first, RandomShare) and first.share == 0.3 and first.seed == 5
    assert first is not second  # random state never leaks from one run into the next
    policy = policy_of(avg)
    assert isinstance(policy, StepAverageEntropy) and policy.tau == pytest.approx(0.7)  # top 3 of 10
    only_random = matched_systems("glimp share=0.2", 0.3, dev, seed=5, families=("random",))
    assert [s.family for s in only_random] == ["random"]
    assert dev.verify_threshold(0.0) < -0.9 and dev.verify_threshold(1.0) == 0.0


def test_verify_keeps_an_empty_draft_without_asking_the_llm() -> None:
    policy = policy_of(verify_systems([-0.5])[0])

    def scorer(text: str) -> float:
        assert text, "an empty draft must not be sent to the LLM"
        return -2.0

    assert policy.after_draft(Draft("", ()), scorer).verdict == Verdict.ACCEPT
    assert policy.after_draft(Draft("12=3*4", (0.1,)), scorer).verdict == Verdict.REWRITE


def test_plan_counts_its_systems_and_matches_verify_only_where_asked() -> None:
    plan = BenchPlan(FAMILIES, taus=(0.1, 0.3), shares=(0.1, 0.2, 0.3), verify_thresholds=(-1.0,),
                     verify_shares=(0.2,))
    assert plan.matched_families(0.1) == tuple(f for f in FAMILIES if f != "verify")
    assert "verify" in plan.matched_families(0.2)
    # 3 baselines + 2 taus + 3 shares + (random, step-average) x 3 + verify x 1 + 1 fixed verify + 2 twins
    assert plan.system_count() == 3 + 2 + 3 + 6 + 1 + 1 + 2
    assert BenchPlan(("slm", "verify")).needs_dev and not BenchPlan(("slm", "glimp-tau")).needs_dev
    with pytest.raises(BadInputError, match="not among the shares"):
        BenchPlan(FAMILIES, shares=(0.1,), verify_shares=(0.2,))


def test_blocking_close_twins_are_asked_for_by_name_and_counted() -> None:
    assert "blocking-close" not in parse_families("all")  # a side-by-side figure, not a table row
    assert parse_families("all,blocking-close")[-1] == "blocking-close"
    assert parse_families("blocking-close,glimp-tau") == ("glimp-tau", "blocking-close")
    twin = blocking_close_twin(threshold_systems([0.3])[0])
    assert (twin.name, twin.family, twin.blocking_close) == ("glimp tau=0.3 blocking-close", "blocking-close",
                                                             True)
    # one twin per GlimpRouter row (2 taus + 1 share), beside the rows themselves
    plan = BenchPlan(("glimp-tau", "glimp-share", "blocking-close"), taus=(0.1, 0.3), shares=(0.2,))
    assert plan.system_count() == 2 + 1 + 3
