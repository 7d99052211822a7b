"""Running systems over problems, one problem at a time (the paper's batch 1), interleaved.

Systems run in groups; inside a group every system answers problem 1, then every system answers
problem 2, and so on (the starting system rotates), so a burst of other work on the machine
slows every system of the group alike instead of whichever happened to run then. Each system
has its own link emulator, cloud client and policy, so nothing leaks between them.

Order: the dev-set calibration (when a system needs it); group 1: the baselines and GlimpRouter's
sweeps; group 2: random, step-average and verify matched to the cloud share each GlimpRouter
share setting reached, fixed-threshold verify, and the full-resend twins of the best GlimpRouter
row and of the step-wise LLM. The blocking-close twins of GlimpRouter's rows run in group 1, beside
their originals. Every system sees the same problems with the same random streams.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bench.e2e.checkers import AnswerChecker
from bench.e2e.dev_calibration import DevEntropies, measure_dev, problem_rng
from bench.e2e.instrument import CloseTimer
from bench.e2e.problems import BenchProblem
from bench.e2e.records import ProblemResult, from_one_call, from_run
from bench.e2e.report import SystemRun, summarize
from bench.e2e.rig import BenchRig
from bench.e2e.systems import (
    GLIMP_FAMILIES,
    MATCHED_FAMILIES,
    SystemSpec,
    baseline_systems,
    blocking_close_twin,
    matched_systems,
    resend_twin,
    share_systems,
    threshold_systems,
    verify_systems,
)
from bench.e2e.targets import best_glimp
from edge_client.config import RouterConfig, StepSettings
from edge_client.link import ResilientLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from edge_client.loop import EdgeRouter, prompt_messages
from edge_client.trace import cost_parts
from glimp_common.errors import BadInputError

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
    verify_shares: tuple[float, ...] | None = None  # the shares verify is matched at (None: all)

    def __post_init__(self) -> None:
        extra = set(self.verify_shares or ()) - set(self.shares)
        if extra:
            raise BadInputError(f"verify shares {sorted(extra)} are not among the shares {list(self.shares)}")

    def matched_families(self, share: float) -> tuple[str, ...]:
        """The matched families to run at one target share (verify only where asked: it is slow)."""
        skip_verify = self.verify_shares is not None and share not in self.verify_shares
        return tuple(f for f in self.families if not (f == "verify" and skip_verify))

    @property
    def needs_dev(self) -> bool:
        return any(f in self.families for f in ("glimp-share", "step-average", "verify"))

    def system_count(self) -> int:
        """How many systems the plan runs (for the progress bar)."""
        count = len(baseline_systems(self.families))
        count += len(self.taus) * ("glimp-tau" in self.families)
        count += len(self.shares) * ("glimp-share" in self.families)
        count += sum(f in MATCHED_FAMILIES for s in self.shares for f in self.matched_families(s))
        count += len(self.verify_thresholds) * ("verify" in self.families)
        glimp_runs = any(f in self.families for f in GLIMP_FAMILIES)
        resends = int(glimp_runs) + int("llm-steps" in self.families)
        glimp_rows = len(self.taus) * ("glimp-tau" in self.families) \
            + len(self.shares) * ("glimp-share" in self.families)
        closes = glimp_rows * ("blocking-close" in self.families)
        return count + resends * ("resend" in self.families) + closes


OnSystem = Callable[[list[SystemRun], DevEntropies | None], None]
SAVE_EVERY_PROBLEMS = 50  # how often a group's partial results are handed to `on_system`


def run_plan(rig: BenchRig, plan: BenchPlan, problems: Sequence[BenchProblem],
             dev_problems: Sequence[BenchProblem], checker: AnswerChecker,
             progress: Progress | None = None,
             on_system: OnSystem | None = None) -> tuple[list[SystemRun], DevEntropies | None]:
    """Run every system of `plan`; return their runs in order, and the dev entropies (if measured).

    `on_system(runs so far, dev)` is called now and then (to save partial results of a long run).
    """
    assert rig.slm is not None, "start the rig first"
    runner = _Runner(rig, plan, problems, checker, progress, on_system)
    if plan.needs_dev:
        runner.dev = _dev_pass(rig, plan, dev_problems, runner.tick, progress)
    dev = runner.dev
    first = list(baseline_systems(plan.families))
    first += threshold_systems(plan.taus) if "glimp-tau" in plan.families else []
    if "glimp-share" in plan.families:
        assert dev is not None and rig.slm is not None
        first += share_systems(plan.shares, dev.calibration(rig.slm, plan.shares[0]))
    if "blocking-close" in plan.families:  # interleaved with their originals: the same load on both
        first += [blocking_close_twin(s) for s in first if s.family in GLIMP_FAMILIES]
    runner.run_group(first)
    second = _matched(plan, runner.runs, dev)
    second += verify_systems(plan.verify_thresholds) if "verify" in plan.families else []
    if "resend" in plan.families:
        second += _resend_twins(first, runner.runs)
    runner.run_group(second)
    return runner.runs, dev


def _dev_pass(rig: BenchRig, plan: BenchPlan, dev_problems: Sequence[BenchProblem],
              tick: Callable[[], None], progress: Progress | None) -> DevEntropies:
    assert rig.slm is not None
    if progress is not None:
        progress.set_description("dev calibration")
    link = rig.link()
    try:
        with rig.backend(link.url) as llm:
            return measure_dev(rig.slm, llm, dev_problems, plan.steps, plan.seed,
                               score="verify" in plan.families, on_problem=tick)
    finally:
        link.close()


def _resend_twins(first: Sequence[SystemSpec], runs: Sequence[SystemRun]) -> list[SystemSpec]:
    """The best GlimpRouter row and, for scale, the step-wise LLM again over a full-resend link."""
    best = best_glimp([summarize(r) for r in runs])
    twins = [resend_twin(s) for s in first if best is not None and s.name == best.name]
    if not twins:
        log.warning("no GlimpRouter system ran, so there is nothing to rerun over a full-resend link")
    # The step-wise LLM makes the most cloud calls per problem: the most a full resend can cost.
    return twins + [resend_twin(s) for s in first if s.family == "llm-steps"]


def _matched(plan: BenchPlan, runs: Sequence[SystemRun], dev: DevEntropies | None) -> list[SystemSpec]:
    """Random, step-average and verify at the share each GlimpRouter share row reached (or the targets)."""
    if not any(f in plan.families for f in MATCHED_FAMILIES):
        return []
    share_runs = [r for r in runs if r.family == "glimp-share"]
    if share_runs:  # in the order of plan.shares, as share_systems made them
        targets = [(s, run.name, summarize(run).cloud_step_share) for s, run in zip(plan.shares, share_runs,
                                                                                     strict=True)]
    else:
        targets = [(s, f"glimp share={s:g}", s) for s in plan.shares]
    specs = []
    for share, name, reached in targets:
        specs += matched_systems(name, reached, dev, plan.seed, plan.matched_families(share))
    return specs


class _Lane:
    """One system while its group runs: its own link, cloud client, router and records."""

    def __init__(self, rig: BenchRig, spec: SystemSpec, plan: BenchPlan, checker: AnswerChecker) -> None:
        assert rig.slm is not None
        self.spec, self.plan, self.checker = spec, plan, checker
        self.link = rig.link()
        self.results: list[ProblemResult] = []
        self.llm: ResilientLLM | None = None
        self.timer: CloseTimer | None = None
        self.router: EdgeRouter | None = None
        self.policy = "one WRITE_ANSWER call"
        if spec.uses_llm:
            self.llm = rig.backend(self.link.url, resend_full=spec.resend_full,  # warm: connected, checked
                                   blocking_close=spec.blocking_close)
            self.timer = CloseTimer(self.llm)
        if spec.make_policy is not None:
            policy = spec.make_policy()
            self.policy = policy.describe()
            config = RouterConfig(policy=policy, steps=plan.steps, answer_by=spec.answer_by)
            self.router = EdgeRouter(rig.slm, self.timer, config)
        self.wire_start = self.link.wire_bytes()

    def answer(self, index: int, problem: BenchProblem) -> None:
        if self.router is None:
            assert self.llm is not None
            self.results.append(self._one_call(self.llm, problem))
            return
        run = self.router.answer(problem.question, rng=problem_rng(self.plan.seed, index))
        verdict = self.checker.check(run.transcript, problem.answer)
        close_s = self.timer.take_close_s() if self.timer is not None else 0.0
        self.results.append(from_run(problem.id, problem.answer, verdict, run, close_s))

    def record(self) -> SystemRun:
        """What the system has measured so far."""
        up, down = self.link.wire_bytes()
        spec = self.spec
        return SystemRun(spec.name, spec.family, spec.matched_to, spec.resend_full, self.policy,
                         tuple(self.results), up - self.wire_start[0], down - self.wire_start[1],
                         sum(r.wall_s for r in self.results))

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.link.close()

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
        timing, traffic = cost_parts([reply.cost], wall_s=time.perf_counter() - started)
        verdict = self.checker.check(reply.text, problem.answer)
        return from_one_call(problem.id, problem.answer, verdict, output=reply.text,
                             tokens=reply.cost.decode_tokens, prefill_tokens=reply.cost.prefill_tokens,
                             timing=timing, traffic=traffic,
                             close_s=close_s)


class _Runner:
    def __init__(self, rig: BenchRig, plan: BenchPlan, problems: Sequence[BenchProblem],
                 checker: AnswerChecker, progress: Progress | None, on_system: OnSystem | None) -> None:
        self.rig, self.plan, self.problems = rig, plan, problems
        self.checker, self.progress, self.on_system = checker, progress, on_system
        self.runs: list[SystemRun] = []
        self.dev: DevEntropies | None = None

    def run_group(self, specs: Sequence[SystemSpec]) -> list[SystemRun]:
        """Every system of `specs` over every problem, interleaved problem by problem."""
        if not specs:
            return []
        lanes: list[_Lane] = []
        try:
            for spec in specs:
                lanes.append(_Lane(self.rig, spec, self.plan, self.checker))
            for index, problem in enumerate(self.problems):
                self._round(lanes, index, problem)
                if self.on_system is not None and (index + 1) % SAVE_EVERY_PROBLEMS == 0:
                    self.on_system([*self.runs, *(lane.record() for lane in lanes)], self.dev)
        finally:
            for lane in lanes:
                lane.close()
        runs = [lane.record() for lane in lanes]
        self.runs += runs
        for run in runs:
            log.info("%s: %s", run.name, summarize(run).one_line())
        if self.on_system is not None:
            self.on_system(list(self.runs), self.dev)
        return runs

    def _round(self, lanes: Sequence[_Lane], index: int, problem: BenchProblem) -> None:
        """One problem through every lane, starting one lane later each problem."""
        shift = index % len(lanes)
        for lane in [*lanes[shift:], *lanes[:shift]]:
            if self.progress is not None:
                self.progress.set_description(lane.spec.name)
            lane.answer(index, problem)
            self.tick()

    def tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)
