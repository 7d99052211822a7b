"""Rendering a run for a terminal: the reasoning as it is written, then a summary.

Each step is headed by who wrote it and its first-token entropy, e.g. `[edge H=0.12]`,
`[cloud H=1.43]`, `[degraded H=1.10]` (the cloud was unreachable, the SLM wrote it).
"""

from __future__ import annotations

import sys
from typing import TextIO

from edge_client.cost import Prices, RunCost, run_cost
from edge_client.trace import (
    AnswerFinished,
    AnswerStarted,
    Event,
    RunResult,
    StepFinished,
    StepStarted,
    TextPreview,
    TextWritten,
    Timing,
)


class StreamPrinter:
    """An `on_event` callback that writes the reasoning to a text stream as it arrives.

    A streaming cloud's step is shown as its pieces arrive (TextPreview, headed as the step will
    be); its StepStarted and TextWritten then add only what the previews had not shown. Should
    the committed text not begin with the previews (a retried call) it is written out whole on a
    line of its own, and a step that degraded after its previews starts on a new line.
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self._previewed: tuple[int, str] | None = None  # (step index, text shown) of a streamed step

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextPreview):
            self._preview(event)
        elif isinstance(event, StepStarted):
            self._start(event)
        elif isinstance(event, TextWritten):
            self._text(event.text)
        elif isinstance(event, StepFinished):
            self._previewed = None
            self._write("\n")
        elif isinstance(event, AnswerStarted):
            self._write(f"[answer by {event.writer}] ")
        elif isinstance(event, AnswerFinished):
            self._write("\n")

    def _preview(self, event: TextPreview) -> None:
        if self._previewed is None or self._previewed[0] != event.index:
            self._write(f"[cloud H={event.entropy_nats:.2f}] ")
            self._previewed = (event.index, "")
        self._previewed = (event.index, self._previewed[1] + event.text)
        self._write(event.text)

    def _start(self, event: StepStarted) -> None:
        streamed = self._previewed is not None and self._previewed[0] == event.index
        if streamed and event.writer == "cloud":
            return  # its header is on screen already
        if streamed:  # the cloud failed after its pieces: the SLM writes the step instead
            self._previewed = None
            self._write("\n")
        self._write(f"[{event.writer} H={event.entropy_nats:.2f}] ")

    def _text(self, text: str) -> None:
        if self._previewed is None:
            self._write(text)
            return
        shown = self._previewed[1]
        self._previewed = (self._previewed[0], "")  # consumed: later text of the step is new
        self._write(text[len(shown):] if text.startswith(shown) else f"\n  (as committed) {text}")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def format_bytes(size: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def offline_banner(result: RunResult) -> str | None:
    """One line when the cloud was down for part of the run (None when it never was).

    Degraded steps and a degraded answer were written by the SLM alone: the reader of the answer
    should know it did not get the large model's help everywhere it was asked for.
    """
    degraded = result.totals.degraded_steps
    answer_degraded = result.answer_writer == "degraded"
    if not degraded and not answer_degraded:
        return None
    parts = [f"{degraded} step{'s' if degraded != 1 else ''} degraded"]
    if answer_degraded:
        parts.append("the answer written by the SLM")
    return f"answered partly offline: {', '.join(parts)} (the cloud was unreachable)"


def render_summary(result: RunResult, prices: Prices | None = None) -> str:
    """A few lines: a banner when the cloud was down, steps and tokens by side, bytes each way,
    where the time went, and the cost.

    The cost line is shown when `prices` are given or set in the environment (GLIMP_PRICE_IN_PER_M,
    GLIMP_PRICE_OUT_PER_M; edge_client.cost says how the all-cloud estimate is made).
    """
    t = result.totals
    banner = offline_banner(result)
    lines = [*([banner] if banner else []),
        f"policy: {result.policy}; thinking ended: {result.thinking_stop}; answer by {result.answer_writer}",
        f"steps: {t.steps} (edge {t.edge_steps}, cloud {t.cloud_steps}, degraded {t.degraded_steps}; "
        f"{t.cloud_share:.0%} to the cloud)",
        f"tokens: SLM {t.slm_tokens} (wasted {t.wasted_tokens}), LLM {t.llm_tokens}, "
        f"answer {t.answer_tokens}",
        f"bytes: up {format_bytes(t.traffic.bytes_up)}, down {format_bytes(t.traffic.bytes_down)} "
        f"in {t.traffic.calls} calls (resync {format_bytes(t.traffic.resync_bytes_up)})",
        _time_line(t.timing),
        "providers: " + ", ".join(f"{side} {name}" for side, name in result.providers.items()),
    ]
    prices = prices if prices is not None else Prices.from_env()
    if prices is not None:
        lines.append(cost_line(run_cost(result, prices)))
    return "\n".join(lines)


def cost_line(cost: RunCost) -> str:
    """'cost: 0.000123 USD (cloud in 40, out 12 tokens); all in the cloud 0.000456 USD (saved 73%)'."""
    share = f"saved {cost.saved / cost.all_cloud_cost:.0%}" if cost.all_cloud_cost else "nothing to save"
    return (
        f"cost: {cost.cost:.6f} {cost.currency} (cloud in {cost.cloud_input_tokens}, out "
        f"{cost.cloud_output_tokens} tokens); all in the cloud {cost.all_cloud_cost:.6f} {cost.currency} "
        f"({share})"
    )


def _time_line(timing: Timing) -> str:
    return (
        f"time: edge compute {timing.edge_compute_s:.2f} s, network {timing.network_s:.2f} s, "
        f"cloud queue {timing.cloud_queue_s:.2f} s, cloud compute {timing.cloud_compute_s:.2f} s; "
        f"wall {timing.wall_s:.2f} s"
    )
