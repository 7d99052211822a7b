"""The issue's targets, checked against what a run measured (reported, never asserted).

- GlimpRouter at its best setting: mean latency <= 0.7x the step-wise LLM-alone baseline, with
  accuracy no more than 1 point below it. "Best": the fastest GlimpRouter row within 1 point of
  the LLM's accuracy; when none is, the most accurate one.
- First-token routing beats random routing at the same cloud share by >= 4 points.
- Uplink bytes per problem >= 10x below a link that resends the whole transcript every call.
- Wasted tokens per cloud step: 1 for GlimpRouter, a whole step for generate-then-verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.e2e.report import SystemRun, SystemSummary, summarize
from bench.e2e.systems import GLIMP_FAMILIES

LATENCY_RATIO_MAX = 0.7
ACCURACY_SLACK = 0.01  # one point
RANDOM_MARGIN = 0.04  # four points
UPLINK_RATIO_MIN = 10.0


@dataclass(frozen=True)
class TargetCheck:
    """One target: what was asked, what was measured, and whether it was met (None: not decidable,
    or a row shown for scale)."""

    target: str
    measured: str
    met: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_glimp(summaries: Sequence[SystemSummary]) -> SystemSummary | None:
    """GlimpRouter's best row: fastest within 1 point of step-wise LLM accuracy, else most accurate."""
    glimp = [s for s in summaries if s.family in GLIMP_FAMILIES]
    if not glimp:
        return None
    reference = _family(summaries, "llm-steps")
    if reference is not None:
        close = [s for s in glimp if s.accuracy >= reference.accuracy - ACCURACY_SLACK - 1e-12]
        if close:
            return min(close, key=lambda s: s.latency_mean_s)
    return max(glimp, key=lambda s: (s.accuracy, -s.latency_mean_s))


def check_targets(runs: Sequence[SystemRun]) -> list[TargetCheck]:
    """Every target that the systems in `runs` allow to measure."""
    summaries = [summarize(r) for r in runs]
    best = best_glimp(summaries)
    checks = _best_setting(summaries, best)
    checks += _versus_random(runs, summaries)
    checks += _uplink(summaries)
    checks += _wasted(summaries)
    return checks


def _family(summaries: Sequence[SystemSummary], family: str) -> SystemSummary | None:
    return next((s for s in summaries if s.family == family), None)


def _best_setting(summaries: Sequence[SystemSummary], best: SystemSummary | None) -> list[TargetCheck]:
    reference = _family(summaries, "llm-steps")
    if best is None or reference is None:
        return []
    ratio = best.latency_mean_s / reference.latency_mean_s
    gap = 100 * (best.accuracy - reference.accuracy)
    one_call = _family(summaries, "llm-one-call")
    versus_one_call = (f"; vs LLM one call {1e3 * one_call.latency_mean_s:.1f} ms, "
                       f"{100 * one_call.accuracy:.1f}%") if one_call else ""
    return [
        TargetCheck(
            f"best GlimpRouter latency <= {LATENCY_RATIO_MAX}x step-wise LLM alone",
            f"{best.name}: {1e3 * best.latency_mean_s:.1f} ms vs {1e3 * reference.latency_mean_s:.1f} ms = "
            f"{ratio:.2f}x{versus_one_call}",
            ratio <= LATENCY_RATIO_MAX,
        ),
        TargetCheck(
            "best GlimpRouter accuracy no more than 1 point below LLM alone",
            f"{best.name}: {100 * best.accuracy:.1f}% vs {100 * reference.accuracy:.1f}% ({gap:+.1f} points)",
            gap >= -100 * ACCURACY_SLACK - 1e-9,
        ),
    ]


def _versus_random(runs: Sequence[SystemRun], summaries: Sequence[SystemSummary]) -> list[TargetCheck]:
    by_name = {r.name: r for r in runs}
    checks = []
    for summary in summaries:
        if summary.family != "random" or summary.matched_to not in by_name:
            continue
        glimp_run, random_run = by_name[summary.matched_to], by_name[summary.name]
        glimp = summarize(glimp_run)
        margin = glimp.accuracy - summary.accuracy
        only_glimp, only_random = _discordant(glimp_run, random_run)
        checks.append(TargetCheck(
            f"first-token routing beats random at the same share by >= {100 * RANDOM_MARGIN:.0f} points",
            f"{glimp.name} {100 * glimp.accuracy:.1f}% (cloud {100 * glimp.cloud_step_share:.1f}%) vs "
            f"{summary.name} {100 * summary.accuracy:.1f}% (cloud {100 * summary.cloud_step_share:.1f}%): "
            f"{100 * margin:+.1f} points; right only with GlimpRouter {only_glimp}, only with random "
            f"{only_random}",
            margin >= RANDOM_MARGIN - 1e-9,
        ))
    return checks


def _discordant(a: SystemRun, b: SystemRun) -> tuple[int, int]:
    """Problems right under `a` only, and under `b` only (a paired comparison on the same problems)."""
    right_b = {r.problem_id: r.correct for r in b.results}
    only_a = sum(r.correct and not right_b.get(r.problem_id, False) for r in a.results)
    only_b = sum(right_b.get(r.problem_id, False) and not r.correct for r in a.results)
    return only_a, only_b


def _uplink(summaries: Sequence[SystemSummary]) -> list[TargetCheck]:
    """Each full-resend twin against the row it repeats: GlimpRouter's is the target; the
    step-wise LLM's (the most cloud calls per problem) is shown for scale only (met: None)."""
    checks = []
    for twin in (s for s in summaries if s.family == "resend"):
        base = next((s for s in summaries if twin.name == f"{s.name} full-resend"), None)
        if base is None or not base.bytes_up_per_problem:
            continue
        ratio = twin.bytes_up_per_problem / base.bytes_up_per_problem
        wire = (twin.wire_up_per_problem / base.wire_up_per_problem) if base.wire_up_per_problem else None
        wire_text = f"; on the wire (TCP payload) {wire:.2f}x" if wire is not None else ""
        measured = (f"{base.name}: {base.bytes_up_per_problem:.0f} B up/problem in "
                    f"{base.calls_per_problem:.2f} calls vs {twin.bytes_up_per_problem:.0f} B with full "
                    f"resend = {ratio:.2f}x{wire_text}")
        if base.family in GLIMP_FAMILIES:
            target = f"uplink bytes per problem >= {UPLINK_RATIO_MIN:.0f}x below a full-resend link"
            checks.append(TargetCheck(target, measured, ratio >= UPLINK_RATIO_MIN))
        else:
            checks.append(TargetCheck("for scale, not a target: the same ratio for the LLM on every step",
                                      measured, None))
    return checks


def _wasted(summaries: Sequence[SystemSummary]) -> list[TargetCheck]:
    """Pooled over every GlimpRouter row that sent steps to the cloud (the best may send none)."""
    glimp = [s for s in summaries if s.family in GLIMP_FAMILIES and s.cloud_steps_per_problem]
    if not glimp:
        return []
    cloud_steps = sum(s.cloud_steps_per_problem * s.problems for s in glimp)
    wasted = sum(s.wasted_tokens_per_problem * s.problems for s in glimp)
    glimp_waste = wasted / cloud_steps
    verify = [s for s in summaries if s.family == "verify" and s.wasted_tokens_per_cloud_step is not None]
    verify_text = ", ".join(f"{s.name} {s.wasted_tokens_per_cloud_step:.2f}" for s in verify)
    verify_text = verify_text or "no verify row sent a step to the cloud"
    slm = _family(summaries, "slm")
    step_text = (f" (an SLM step is {slm.tokens_per_step:.2f} tokens on average)"
                 if slm is not None and slm.tokens_per_step else "")
    # Both halves must be measured: a verify run that rewrote nothing says nothing about its waste.
    met = (abs(glimp_waste - 1.0) < 1e-6 and all((s.wasted_tokens_per_cloud_step or 0) > 1 for s in verify)
           if verify else None)
    return [TargetCheck(
        "wasted tokens per cloud step: 1 for GlimpRouter vs a whole step for generate-then-verify",
        f"GlimpRouter (all {len(glimp)} rows with cloud steps) {glimp_waste:.2f}; {verify_text}{step_text}",
        met,
    )]
