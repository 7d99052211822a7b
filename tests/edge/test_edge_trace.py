"""The trace records, their totals and JSON, and the terminal rendering."""

from __future__ import annotations

import io
import json

import pytest

from edge_client.console import StreamPrinter, format_bytes, render_summary
from edge_client.llm_backend import CallCost
from edge_client.trace import (
    AnswerFinished,
    AnswerRecord,
    AnswerStarted,
    RunResult,
    StepFinished,
    StepRecord,
    StepStarted,
    TextPreview,
    TextWritten,
    Timing,
    Totals,
    Traffic,
    cost_parts,
)


def step(index: int, writer: str, slm: int, llm: int, wasted: int, up: int = 0, down: int = 0) -> StepRecord:
    timing = Timing(
        edge_compute_s=0.1,
        network_s=0.2 if writer == "cloud" else 0.0,
        cloud_queue_s=0.01 if writer == "cloud" else 0.0,
        cloud_compute_s=0.3 if writer == "cloud" else 0.0,
        wall_s=0.6,
    )
    traffic = Traffic(up, down, 0, 0.0, 1 if writer == "cloud" else 0)
    return StepRecord(
        index,
        writer,
        0.5 + index,
        writer,
        "first_token_entropy",
        0.5 + index,
        f"step {index}",
        "delimiter",
        slm,
        llm,
        wasted,
        3,
        5 if writer == "cloud" else 0,
        timing,
        traffic,
    )


def result() -> RunResult:
    steps = (
        step(0, "edge", 7, 0, 0),
        step(1, "cloud", 1, 9, 1, up=300, down=2000),
        step(2, "degraded", 4, 0, 0),
    )
    answer = AnswerRecord(
        "cloud", "42", "eos", 3, Timing(0.0, 0.05, 0.0, 0.1, 0.2), Traffic(100, 150, 0, 0.0, 1)
    )
    totals = Totals.of(steps, answer, wall_s=2.5)
    return RunResult(
        "q?",
        "42",
        "cloud",
        "think_end",
        "step 0\n\nstep 1\n\nstep 2</think>42",
        steps,
        answer,
        totals,
        "threshold (tau 0.9 nats)",
        {"slm": "CPUExecutionProvider", "llm": "triton"},
    )


def test_totals_add_up_by_side() -> None:
    totals = result().totals
    assert (totals.steps, totals.edge_steps, totals.cloud_steps, totals.degraded_steps) == (3, 1, 1, 1)
    assert totals.slm_tokens == 12 and totals.llm_tokens == 12 and totals.wasted_tokens == 1
    assert totals.traffic == Traffic(400, 2150, 0, 0.0, 2)
    assert totals.timing.edge_compute_s == pytest.approx(0.3)
    assert totals.timing.network_s == pytest.approx(0.25)
    assert totals.timing.cloud_compute_s == pytest.approx(0.4)
    assert totals.timing.wall_s == 2.5
    assert totals.cloud_share == pytest.approx(1 / 3)


def test_step_tokens_count_the_writers_tokens() -> None:
    assert step(0, "edge", 7, 0, 0).step_tokens == 7
    assert step(1, "cloud", 1, 9, 1).step_tokens == 9
    rewritten = step(2, "cloud", 12, 9, 12)  # a rejected draft: its tokens are wasted, not the step's
    assert rewritten.step_tokens == 9


def test_costs_split_into_network_queue_and_compute() -> None:
    costs = [
        CallCost(bytes_up=10, bytes_down=20, round_trip_s=1.0, queue_s=0.1, compute_s=0.6),
        CallCost(bytes_up=5, round_trip_s=0.5, compute_s=0.5, resync_bytes_up=4, resync_s=0.2),
    ]
    timing, traffic = cost_parts(costs)
    assert timing.network_s == pytest.approx(0.3) and timing.cloud_queue_s == pytest.approx(0.1)
    assert timing.cloud_compute_s == pytest.approx(1.1)
    assert traffic == Traffic(15, 20, 4, 0.2, 2)


def test_json_trace_holds_every_step_and_the_totals() -> None:
    data = json.loads(result().to_json())
    assert [s["writer"] for s in data["steps"]] == ["edge", "cloud", "degraded"]
    assert data["steps"][1]["traffic"]["bytes_down"] == 2000
    assert data["steps"][1]["timing"]["cloud_compute_s"] == 0.3
    assert data["totals"]["cloud_share"] == pytest.approx(1 / 3)
    assert data["answer_record"]["writer"] == "cloud" and data["thinking_stop"] == "think_end"


def test_summary_names_steps_tokens_bytes_and_time() -> None:
    summary = render_summary(result())
    assert "steps: 3 (edge 1, cloud 1, degraded 1; 33% to the cloud)" in summary
    assert "tokens: SLM 12 (wasted 1), LLM 12, answer 3" in summary
    assert "bytes: up 400 B, down 2.1 KiB in 2 calls" in summary
    assert (
        "edge compute 0.30 s, network 0.25 s, cloud queue 0.01 s, cloud compute 0.40 s; wall 2.50 s"
        in summary
    )


def test_stream_marks_each_step_with_its_writer_and_entropy() -> None:
    out = io.StringIO()
    printer = StreamPrinter(out)
    records = result()
    for event in (
        StepStarted(0, "edge", 0.123),
        TextWritten("12+30"),
        TextWritten("=42"),
        StepFinished(records.steps[0]),
        StepStarted(1, "degraded", 1.43),
        TextWritten("so"),
        StepFinished(records.steps[2]),
        AnswerStarted("cloud"),
        TextWritten("42"),
        AnswerFinished(records.answer_record),
    ):
        printer(event)
    assert out.getvalue() == "[edge H=0.12] 12+30=42\n[degraded H=1.43] so\n[answer by cloud] 42\n"


def test_a_streamed_cloud_step_is_shown_as_its_pieces_arrive_and_once() -> None:
    out = io.StringIO()
    printer = StreamPrinter(out)
    records = result()
    for event in (
        TextPreview(0, 1.3, "6="), TextPreview(0, 1.3, "10-4"),  # while the LLM writes
        StepStarted(0, "cloud", 1.3), TextWritten("6=10-4</think>"), StepFinished(records.steps[1]),
        TextPreview(1, 0.9, "7=1"),  # a retried call committed other text: shown whole, marked
        StepStarted(1, "cloud", 0.9), TextWritten("7=3"), StepFinished(records.steps[1]),
        TextPreview(2, 1.1, "8="),  # the cloud failed after a piece: the SLM's step on its own line
        StepStarted(2, "degraded", 1.1), TextWritten("9=2"), StepFinished(records.steps[2]),
    ):
        printer(event)
    assert out.getvalue() == ("[cloud H=1.30] 6=10-4</think>\n"
                              "[cloud H=0.90] 7=1\n  (as committed) 7=3\n"
                              "[cloud H=1.10] 8=\n[degraded H=1.10] 9=2\n")


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 << 20)] == ["0 B", "1023 B", "1.5 KiB", "5.0 MiB"]
