"""What the benchmark keeps of each problem a system answered.

One flat record per (system, problem), taken from the edge loop's trace (`RunResult`) or, for
the one-call baseline, from the single LLM reply. Everything the report aggregates is here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.e2e.checkers import Verdict
from edge_client.cost import cloud_tokens
from edge_client.trace import RunResult, Timing, Traffic


@dataclass(frozen=True)
class ProblemResult:
    """One problem answered by one system. Tokens are counted by the writer's tokenizer."""

    problem_id: str
    correct: bool
    predicted: str | None
    expected: str
    wall_s: float  # the whole problem, one at a time (the paper's latency)
    edge_compute_s: float
    network_s: float
    cloud_queue_s: float
    cloud_compute_s: float
    close_s: float  # closing the cloud context at the end (queuing it; a round trip when blocking)
    steps: int
    cloud_steps: int  # steps the LLM wrote (a rewritten draft counts here)
    degraded_steps: int
    step_tokens: int  # tokens of the kept steps
    cloud_step_tokens: int  # part of step_tokens the LLM wrote
    answer_tokens: int
    answer_by_cloud: bool
    wasted_tokens: int  # generated and thrown away: discarded probes, rejected drafts
    bytes_up: int  # serialized gRPC messages, edge -> cloud
    bytes_down: int
    resync_bytes_up: int  # part of bytes_up spent resending a whole transcript after a mismatch
    calls: int  # LLM calls (write, score); the context close is not counted
    thinking_stop: str
    output: str  # reasoning + answer, as the checker read it
    # What the cloud bills: tokens the LLM read (prefill, over every call) and generated (wasted too).
    cloud_input_tokens: int = 0
    cloud_output_tokens: int = 0

    @property
    def kept_tokens(self) -> int:
        return self.step_tokens + self.answer_tokens

    @property
    def cloud_tokens(self) -> int:
        return self.cloud_step_tokens + (self.answer_tokens if self.answer_by_cloud else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_run(problem_id: str, expected: str, verdict: Verdict, run: RunResult,
             close_s: float) -> ProblemResult:
    """The record of a problem answered through the edge loop."""
    totals = run.totals
    timing, traffic = totals.timing, totals.traffic
    cloud_in, cloud_out = cloud_tokens(run)
    return ProblemResult(
        problem_id=problem_id, correct=verdict.correct, predicted=verdict.predicted, expected=expected,
        wall_s=timing.wall_s, edge_compute_s=timing.edge_compute_s, network_s=timing.network_s,
        cloud_queue_s=timing.cloud_queue_s, cloud_compute_s=timing.cloud_compute_s, close_s=close_s,
        steps=totals.steps, cloud_steps=totals.cloud_steps, degraded_steps=totals.degraded_steps,
        step_tokens=sum(s.step_tokens for s in run.steps),
        cloud_step_tokens=sum(s.step_tokens for s in run.steps if s.writer == "cloud"),
        answer_tokens=run.answer_record.tokens, answer_by_cloud=run.answer_writer == "cloud",
        wasted_tokens=totals.wasted_tokens, bytes_up=traffic.bytes_up, bytes_down=traffic.bytes_down,
        resync_bytes_up=traffic.resync_bytes_up, calls=traffic.calls, thinking_stop=run.thinking_stop,
        output=run.transcript, cloud_input_tokens=cloud_in, cloud_output_tokens=cloud_out,
    )


def from_one_call(problem_id: str, expected: str, verdict: Verdict, *, output: str, tokens: int,
                  prefill_tokens: int, timing: Timing, traffic: Traffic, close_s: float) -> ProblemResult:
    """The record of a problem the LLM answered in one call (reasoning and answer together)."""
    return ProblemResult(
        problem_id=problem_id, correct=verdict.correct, predicted=verdict.predicted, expected=expected,
        wall_s=timing.wall_s, edge_compute_s=timing.edge_compute_s, network_s=timing.network_s,
        cloud_queue_s=timing.cloud_queue_s, cloud_compute_s=timing.cloud_compute_s, close_s=close_s,
        steps=0, cloud_steps=0, degraded_steps=0, step_tokens=0, cloud_step_tokens=0,
        answer_tokens=tokens, answer_by_cloud=True, wasted_tokens=0, bytes_up=traffic.bytes_up,
        bytes_down=traffic.bytes_down, resync_bytes_up=traffic.resync_bytes_up, calls=traffic.calls,
        thinking_stop="one_call", output=output, cloud_input_tokens=prefill_tokens,
        cloud_output_tokens=tokens,
    )
