"""The record of a run: one frozen record per step, the final answer, totals by side.

Also the events the loop emits while it runs (`on_event`), so a caller can stream the
reasoning as it is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edge_client.llm_backend import CallCost

WRITERS = ("edge", "cloud", "degraded")


@dataclass(frozen=True)
class Timing:
    """Where the time of a step (or the answer) went, in seconds."""

    edge_compute_s: float = 0.0  # the SLM: syncing the transcript, the probe, writing or drafting
    network_s: float = 0.0  # LLM round trips minus the server's own queue + compute
    cloud_queue_s: float = 0.0
    cloud_compute_s: float = 0.0
    wall_s: float = 0.0

    def __add__(self, other: Timing) -> Timing:
        return Timing(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True)
class Traffic:
    """What crossed the link, in bytes of serialized messages (0 for an in-process LLM)."""

    bytes_up: int = 0
    bytes_down: int = 0
    resync_bytes_up: int = 0  # part of bytes_up spent resending the whole transcript
    resync_s: float = 0.0  # part of the network time spent on that resend
    calls: int = 0  # LLM calls made (write, score)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


def _values(record: Timing | Traffic) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record.__dataclass_fields__)


def cost_parts(
    costs: Sequence[CallCost], *, edge_compute_s: float = 0.0, wall_s: float = 0.0,
) -> tuple[Timing, Traffic]:
    """Split LLM call costs into the trace's time and traffic parts, with the SLM's and wall time."""
    timing, traffic = Timing(), Traffic()
    for cost in costs:
        timing += Timing(0.0, cost.network_s, cost.queue_s, cost.compute_s, 0.0)
        traffic += Traffic(cost.bytes_up, cost.bytes_down, cost.resync_bytes_up, cost.resync_s, 1)
    return replace(timing, edge_compute_s=edge_compute_s, wall_s=wall_s), traffic


@dataclass(frozen=True)
class StepRecord:
    """One reasoning step: who wrote it, why, what it cost."""

    index: int  # 0-based
    writer: str  # "edge" | "cloud" | "degraded" (the SLM wrote it because the cloud failed)
    entropy_nats: float  # of the probe (first token), whole vocabulary, temperature 1
    decision: str  # "edge" | "cloud" | "draft:accept" | "draft:rewrite"
    signal_name: str  # what the policy compared: "first_token_entropy", "step_mean_entropy", ...
    signal: float | None
    text: str  # the step as appended to the transcript (an end-of-thinking marker included)
    stop: str  # "delimiter" | "think_end" | "eos" | "max_tokens"
    slm_tokens: int  # tokens the SLM sampled for this step: probe, step or draft
    llm_tokens: int  # tokens the LLM generated for this step
    wasted_tokens: int  # SLM tokens thrown away: the discarded probe, or a rejected draft
    slm_prefill_tokens: int  # tokens the SLM fed to catch up with the transcript before the step
    llm_prefill_tokens: int  # tokens the LLM fed to catch up (0 when it was not called)
    timing: Timing
    traffic: Traffic
    error: str = ""  # the cloud error behind a degraded step
    cloud_first_text_s: float = 0.0  # a cloud step: from its call to the first text (0: not one)

    @property
    def step_tokens(self) -> int:
        """Tokens of the step itself, counted against the budget (by the writer's tokenizer)."""
        return self.llm_tokens if self.writer == "cloud" else self.slm_tokens - self.wasted_tokens


@dataclass(frozen=True)
class AnswerRecord:
    """The final answer after the end-of-thinking marker."""

    writer: str  # "cloud" | "edge" | "degraded" | "none"
    text: str
    stop: str  # "eos" | "max_tokens" | "stop_string" | "context" | "skipped"
    tokens: int
    timing: Timing = field(default_factory=Timing)
    traffic: Traffic = field(default_factory=Traffic)
    error: str = ""
    llm_prefill_tokens: int = 0  # tokens the LLM fed to catch up before answering (0 when not called)


@dataclass(frozen=True)
class Totals:
    """A run summed up by side."""

    steps: int
    edge_steps: int
    cloud_steps: int
    degraded_steps: int
    slm_tokens: int  # steps + answer, probes and drafts included
    llm_tokens: int
    wasted_tokens: int
    answer_tokens: int
    timing: Timing
    traffic: Traffic

    @property
    def cloud_share(self) -> float:
        """Share of steps the LLM wrote."""
        return self.cloud_steps / self.steps if self.steps else 0.0

    @classmethod
    def of(cls, steps: Sequence[StepRecord], answer: AnswerRecord, wall_s: float) -> Totals:
        timing = sum((s.timing for s in steps), answer.timing)
        traffic = sum((s.traffic for s in steps), answer.traffic)
        answer_slm = answer.tokens if answer.writer in ("edge", "degraded") else 0
        return cls(
            steps=len(steps),
            edge_steps=sum(s.writer == "edge" for s in steps),
            cloud_steps=sum(s.writer == "cloud" for s in steps),
            degraded_steps=sum(s.writer == "degraded" for s in steps),
            slm_tokens=sum(s.slm_tokens for s in steps) + answer_slm,
            llm_tokens=sum(s.llm_tokens for s in steps) + (answer.tokens if answer.writer == "cloud" else 0),
            wasted_tokens=sum(s.wasted_tokens for s in steps),
            answer_tokens=answer.tokens,
            timing=replace(timing, wall_s=wall_s),
            traffic=traffic,
        )


@dataclass(frozen=True)
class RunResult:
    """One question answered: the reasoning, the answer, and where tokens, bytes and time went."""

    question: str
    answer: str
    answer_writer: str  # "cloud" | "edge" | "degraded" | "none"
    thinking_stop: str  # "think_end" | "eos" | "repeat" | "budget" | "context"
    transcript: str  # everything appended after the prompt, the answer included
    steps: tuple[StepRecord, ...]
    answer_record: AnswerRecord
    totals: Totals
    policy: str
    providers: dict[str, str]  # side -> where it ran ("CPUExecutionProvider", "triton", ...)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"]["cloud_share"] = self.totals.cloud_share
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The whole trace as JSON (what `glimp run --json` writes)."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"


# ---- events emitted while a run is in progress ---------------------------------------------


@dataclass(frozen=True)
class StepStarted:
    """A step's writer is known; its text follows as `TextWritten` events."""

    index: int
    writer: str
    entropy_nats: float


@dataclass(frozen=True)
class TextWritten:
    """A piece of the current step's or answer's text, final (never taken back)."""

    text: str


@dataclass(frozen=True)
class TextPreview:
    """A piece of a cloud step as the LLM streams it, before its StepStarted and TextWritten.

    A preview: the step's TextWritten brings the text the server committed, which begins with
    the previews unless the call failed and was retried (or the step degraded to the SLM).
    """

    index: int  # the step's
    entropy_nats: float
    text: str


@dataclass(frozen=True)
class StepFinished:
    record: StepRecord


@dataclass(frozen=True)
class AnswerStarted:
    writer: str


@dataclass(frozen=True)
class AnswerFinished:
    record: AnswerRecord


Event = StepStarted | TextPreview | TextWritten | StepFinished | AnswerStarted | AnswerFinished
EventCallback = Callable[[Event], None]
