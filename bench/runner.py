"""Running systems over problems, one problem at a time (the paper's batch 1), in one plan.

Order: the dev-set calibration (when a system needs it), the baselines, GlimpRouter's sweeps,
then random and step-average matched to the cloud share each GlimpRouter share setting reached,
generate-then-verify, and last the best GlimpRouter setting again over a full-resend link.
Every system sees the same problems with the same per-problem random streams.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bench.checkers import AnswerChecker
from bench.dev_calibration import DevEntropies, measure_dev, problem_rng
from bench.instrument import CloseTimer
from bench.problems import BenchProblem
from bench.records import ProblemResult, from_one_call, from_run
from bench.report import SystemRun, summarize
from bench.rig import BenchRig
from bench.systems import (
    GLIMP_FAMILIES,
    MATCHED_FAMILIES,
    SystemSpec,
    baseline_systems,
    matched_systems,
    resend_twin,
    share_systems,
    threshold_systems,
    verify_systems,
)
from bench.targets import best_glimp
from edge_client.config import RouterConfig, StepSettings
from edge_client.llm_backend import LLMAction, LLMRequest
from edge_client.loop import EdgeRouter, prompt_messages
from edge_client.resilient_link import ResilientLLM
from edge_client.trace import Timing, cost_parts

log = logging.getLogger(__name__)


class Progress(Protocol):
    """What the runner reports progress to (a tqdm bar fits)."""

    def set_description(self, desc: str) -> None: ...

    def update(self, n: int = 1) -> object: ...


@dataclass(frozen=True)
class BenchPlan:
    """Which systems run, and over which settings."""

    families: tuple[str, ...]
    taus: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)
    shares: tuple[float, ...] = (0.1, 0.2, 0.3)
    verify_thresholds: tuple[float, ...] = ()  # fixed thresholds, on top of the matched ones
    steps: StepSettings = StepSettings(temperature=0.0, top_p=1.0, seed=0)
    seed: int = 0

    @property
    def needs_dev(self) -> bool:
        return any(f in self.families for f in ("glimp-share", "step-average", "verify"))

    def system_count(self) -> int:
        """How many systems the plan runs (for the progress bar)."""
        count = len(baseline_systems(self.families))
        count += len(self.taus) * ("glimp-tau" in self.families)
        count += len(self.shares) * ("glimp-share" in self.families)
        count += len(self.shares) * sum(f in self.families for f in MATCHED_FAMILIES)
        count += len(self.verify_thresholds) * ("verify" in self.families)
        glimp_runs = any(f in self.families for f in GLIMP_FAMILIES)
        resends = int(glimp_runs) + int("llm-steps" in self.families)
        return count + resends * ("resend" in self.families)


OnSystem = Callable[[list[SystemRun], DevEntropies | None], None]


def run_plan(rig: BenchRig, plan: BenchPlan, problems: Sequence[BenchProblem],
             dev_problems: Sequence[BenchProblem], checker: AnswerChecker,
             progress: Progress | None = None,
             on_system: OnSystem | None = None) -> tuple[list[SystemRun], DevEntropies | None]:
    """Run every system of `plan`; return their runs in order, and the dev entropies (if measured).

    `on_system(runs so far, dev)` is called after each system (to save partial results of a long run).
    """
    assert rig.slm is not None, "start the rig first"
    runner = _Runner(rig, plan, problems, checker, progress, on_system)
    dev = None
    if plan.needs_dev:
        if progress is not None:
            progress.set_description("dev calibration")
        with rig.backend() as llm:
            dev = measure_dev(rig.slm, llm, dev_problems, plan.steps, plan.seed,
                              score="verify" in plan.families, on_problem=runner.tick)
        runner.dev = dev
    for spec in baseline_systems(plan.families):
        runner.run(spec)
    glimp_rows = runner.run_all(threshold_systems(plan.taus) if "glimp-tau" in plan.families else [])
    share_rows = []
    if "glimp-share" in plan.families:
        assert dev is not None
        share_rows = runner.run_all(share_systems(plan.shares, dev.calibration(rig.slm, plan.shares[0])))
    for matched in _matched(plan, share_rows, dev):
        runner.run(matched)
    if "verify" in plan.families:
        runner.run_all(verify_systems(plan.verify_thresholds))
    if "resend" in plan.families:
        best = best_glimp([summarize(r) for r in runner.runs])
        chosen = next((s for s, r in [*glimp_rows, *share_rows] if best and r.name == best.name), None)
        if chosen is not None:
            runner.run(resend_twin(chosen))
        else:
            log.warning("no GlimpRouter system ran, so there is nothing to rerun over a full-resend link")
        # For scale: the most cloud calls per problem, so the most a full resend can cost.
        runner.run_all([resend_twin(s) for s in baseline_systems(plan.families) if s.family == "llm-steps"])
    return runner.runs, dev


def _matched(plan: BenchPlan, share_rows: list[tuple[SystemSpec, SystemRun]],
             dev: DevEntropies | None) -> list[SystemSpec]:
    """Random and step-average at the share each GlimpRouter share row reached (or the target shares)."""
    if not any(f in plan.families for f in MATCHED_FAMILIES):
        return []
    if share_rows:
        targets = [(run.name, summarize(run).cloud_step_share) for _, run in share_rows]
    else:
        targets = [(f"glimp share={s:g}", s) for s in plan.shares]
    specs = []
    for name, share in targets:
        specs += matched_systems(name, share, dev, plan.seed, plan.families)
    return specs


class _Runner:
    def __init__(self, rig: BenchRig, plan: BenchPlan, problems: Sequence[BenchProblem],
                 checker: AnswerChecker, progress: Progress | None, on_system: OnSystem | None) -> None:
        self.rig, self.plan, self.problems = rig, plan, problems
        self.checker, self.progress, self.on_system = checker, progress, on_system
        self.runs: list[SystemRun] = []
        self.dev: DevEntropies | None = None

    def run_all(self, specs: Sequence[SystemSpec]) -> list[tuple[SystemSpec, SystemRun]]:
        return [(spec, self.run(spec)) for spec in specs]

    def run(self, spec: SystemSpec) -> SystemRun:
        if self.progress is not None:
            self.progress.set_description(spec.name)
        llm = self.rig.backend(resend_full=spec.resend_full) if spec.uses_llm else None
        try:
            run = self._timed(spec, llm)
        finally:
            if llm is not None:
                llm.close()
        self.runs.append(run)
        log.info("%s: %s", spec.name, summarize(run).one_line())
        if self.on_system is not None:
            self.on_system(list(self.runs), self.dev)
        return run

    def _timed(self, spec: SystemSpec, llm: ResilientLLM | None) -> SystemRun:
        up, down = self.rig.wire_bytes()
        started = time.perf_counter()
        results = self._one_calls(llm) if spec.one_call else self._routed(spec, llm)
        wall_s = time.perf_counter() - started
        up_after, down_after = self.rig.wire_bytes()
        policy = "one WRITE_ANSWER call" if spec.make_policy is None else spec.make_policy().describe()
        return SystemRun(spec.name, spec.family, spec.matched_to, spec.resend_full, policy, tuple(results),
                         up_after - up, down_after - down, wall_s)

    def _routed(self, spec: SystemSpec, llm: ResilientLLM | None) -> list[ProblemResult]:
        assert spec.make_policy is not None and self.rig.slm is not None
        config = RouterConfig(policy=spec.make_policy(), steps=self.plan.steps, answer_by=spec.answer_by)
        timer = CloseTimer(llm) if llm is not None else None
        router = EdgeRouter(self.rig.slm, timer, config)
        results = []
        for index, problem in enumerate(self.problems):
            run = router.answer(problem.question, rng=problem_rng(self.plan.seed, index))
            verdict = self.checker.check(run.transcript, problem.answer)
            close_s = timer.take_close_s() if timer is not None else 0.0
            results.append(from_run(problem.id, problem.answer, verdict, run, close_s))
            self.tick()
        return results

    def _one_calls(self, llm: ResilientLLM | None) -> list[ProblemResult]:
        assert llm is not None
        return [self._one_call(llm, problem) for problem in self.problems]

    def _one_call(self, llm: ResilientLLM, problem: BenchProblem) -> ProblemResult:
        """The LLM writes reasoning and answer in one call, as a user without this project would."""
        steps = self.plan.steps
        request = LLMRequest(LLMAction.WRITE_ANSWER, "", steps.sampling, (), steps.answer_max_tokens)
        started = time.perf_counter()
        conversation = llm.open(prompt_messages(problem.question))
        try:
            reply = conversation.call(request)
        finally:
            closing = time.perf_counter()
            conversation.close()  # timed, as in the loop, which closes its context before returning
            close_s = time.perf_counter() - closing
        timing, traffic = cost_parts([reply.cost])
        timing = Timing(0.0, timing.network_s, timing.cloud_queue_s, timing.cloud_compute_s,
                        time.perf_counter() - started)
        verdict = self.checker.check(reply.text, problem.answer)
        self.tick()
        return from_one_call(problem.id, problem.answer, verdict, output=reply.text,
                             tokens=reply.cost.decode_tokens, timing=timing, traffic=traffic,
                             close_s=close_s)

    def tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)


