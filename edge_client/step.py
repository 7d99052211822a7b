"""One reasoning step on its way to the trace: how it started, what its writer made of it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge_client.llm_backend import CallCost
from edge_client.policies import Decision
from edge_client.trace import StepRecord, cost_parts


@dataclass(frozen=True)
class StepStart:
    """A step once the SLM has glimpsed its first token and the policy has routed it."""

    index: int  # 0-based
    entropy_nats: float  # of the probe's distribution
    probe: int  # the probe token, sampled with the step's settings
    decision: Decision
    slm_prefill_tokens: int  # tokens the SLM fed to catch up with the transcript
    started: float  # perf_counter at the start of the step
    glimpse_s: float  # the SLM's time to sync, glimpse and sample the probe


@dataclass(frozen=True)
class StepOutcome:
    """What a writer made of a step (a draft's verdict included)."""

    writer: str  # "edge" | "cloud" | "degraded"
    text: str  # as appended to the transcript (an end-of-thinking marker included)
    stop: str  # "delimiter" | "think_end" | "eos" | "max_tokens"
    slm_tokens: int = 0
    llm_tokens: int = 0
    wasted_tokens: int = 0
    llm_prefill_tokens: int = 0
    edge_s: float = 0.0  # the SLM writing or drafting (the glimpse is in StepStart)
    costs: tuple[CallCost, ...] = ()  # the LLM calls made for the step, failed ones included
    error: str = ""  # the cloud error behind a degraded step
    verdict: str = ""  # a draft's: "accept" | "rewrite"; empty for a step that was not drafted
    signal: float | None = None  # what the draft's judgement compared
    signal_name: str = ""
    cloud_first_text_s: float = 0.0  # a cloud step: from its call to the first text (time to first token)


def step_record(start: StepStart, outcome: StepOutcome) -> StepRecord:
    """The finished step for the trace (its wall time ends now)."""
    edge_s, wall_s = start.glimpse_s + outcome.edge_s, time.perf_counter() - start.started
    timing, traffic = cost_parts(outcome.costs, edge_compute_s=edge_s, wall_s=wall_s)
    judged = bool(outcome.verdict)
    decision = f"draft:{outcome.verdict}" if judged else start.decision.route.value
    signal = outcome.signal if judged else start.decision.signal
    signal_name = outcome.signal_name if judged else start.decision.signal_name
    return StepRecord(
        start.index, outcome.writer, start.entropy_nats, decision, signal_name, signal, outcome.text,
        outcome.stop, outcome.slm_tokens, outcome.llm_tokens, outcome.wasted_tokens, start.slm_prefill_tokens,
        outcome.llm_prefill_tokens, timing, traffic, outcome.error, outcome.cloud_first_text_s,
    )
