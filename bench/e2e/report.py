"""From per-problem records to the paper-shaped table: Markdown, CSV and JSON.

Shares are pooled over problems (cloud steps / all steps), the rest are means per problem.
Pure functions of the records, so the arithmetic is tested on made-up result sets.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from bench.e2e.records import ProblemResult
from bench.e2e.systems import BLOCKING_CLOSE_SUFFIX
from edge_client.cost import Prices
from glimp_common.errors import BadInputError


@dataclass(frozen=True)
class SystemRun:
    """One system over every problem, as measured."""

    name: str
    family: str
    matched_to: str  # the GlimpRouter row whose reached share this row copies ("" if none)
    resend_full: bool
    policy: str  # the policy's own description (tau, share, threshold)
    results: tuple[ProblemResult, ...]
    wire_bytes_up: int  # TCP payload through the link emulator (0 on loopback)
    wire_bytes_down: int
    wall_s: float  # the whole system run


@dataclass(frozen=True)
class SystemSummary:
    """One row of the table."""

    name: str
    family: str
    matched_to: str
    policy: str
    problems: int
    accuracy: float  # share of problems answered exactly
    accuracy_se: float  # binomial standard error of `accuracy`
    latency_mean_s: float  # wall clock per problem
    latency_median_s: float
    latency_p90_s: float
    cloud_step_share: float  # steps the LLM wrote / all steps
    cloud_token_share: float  # kept tokens the LLM wrote (steps + answer) / all kept tokens
    steps_per_problem: float
    cloud_steps_per_problem: float
    degraded_steps_per_problem: float  # steps the SLM wrote because a cloud call failed
    tokens_per_step: float | None  # kept step tokens / steps (None without steps)
    calls_per_problem: float
    bytes_up_per_problem: float  # serialized gRPC messages
    bytes_down_per_problem: float
    wire_up_per_problem: float  # TCP payload through the emulator (framing, close calls included)
    wire_down_per_problem: float
    cloud_compute_s_per_problem: float
    cloud_input_tokens_per_problem: float  # what the cloud bills: tokens the LLM read (prefill) ...
    cloud_output_tokens_per_problem: float  # ... and generated
    wasted_tokens_per_problem: float
    wasted_tokens_per_cloud_step: float | None  # None when no step went to the cloud
    edge_compute_s: float  # the latency split, means per problem
    network_s: float
    cloud_queue_s: float
    close_s: float  # closing the cloud context at the end of a problem (a blocking close: a round trip)
    other_s: float  # wall minus the parts above: tokenizing, syncing, Python between calls

    def one_line(self) -> str:
        return (f"accuracy {self.accuracy:.1%}, {self.latency_mean_s * 1e3:.1f} ms/problem, "
                f"cloud steps {self.cloud_step_share:.1%}, up {self.bytes_up_per_problem:.0f} B/problem")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def summarize(run: SystemRun) -> SystemSummary:
    """Aggregate one system's records; BadInputError when it has none."""
    rows = run.results
    if not rows:
        raise BadInputError(f"system {run.name!r} has no results to summarize")
    n = len(rows)
    accuracy = sum(r.correct for r in rows) / n
    walls = np.array([r.wall_s for r in rows])
    cloud_steps, steps = sum(r.cloud_steps for r in rows), sum(r.steps for r in rows)
    # Wasted tokens per cloud step stays None without cloud steps: 0 would read as "no waste".
    wasted = sum(r.wasted_tokens for r in rows)
    parts = [r.edge_compute_s + r.network_s + r.cloud_queue_s + r.cloud_compute_s + r.close_s for r in rows]
    return SystemSummary(
        name=run.name, family=run.family, matched_to=run.matched_to, policy=run.policy, problems=n,
        accuracy=accuracy, accuracy_se=math.sqrt(accuracy * (1 - accuracy) / n),
        latency_mean_s=float(walls.mean()), latency_median_s=float(np.median(walls)),
        latency_p90_s=float(np.percentile(walls, 90)),
        cloud_step_share=_ratio(cloud_steps, steps),
        cloud_token_share=_ratio(sum(r.cloud_tokens for r in rows), sum(r.kept_tokens for r in rows)),
        steps_per_problem=_mean([r.steps for r in rows]), cloud_steps_per_problem=cloud_steps / n,
        degraded_steps_per_problem=_mean([r.degraded_steps for r in rows]),
        tokens_per_step=_ratio(sum(r.step_tokens for r in rows), steps) if steps else None,
        calls_per_problem=_mean([r.calls for r in rows]),
        bytes_up_per_problem=_mean([r.bytes_up for r in rows]),
        bytes_down_per_problem=_mean([r.bytes_down for r in rows]),
        wire_up_per_problem=run.wire_bytes_up / n, wire_down_per_problem=run.wire_bytes_down / n,
        cloud_compute_s_per_problem=_mean([r.cloud_compute_s for r in rows]),
        cloud_input_tokens_per_problem=_mean([r.cloud_input_tokens for r in rows]),
        cloud_output_tokens_per_problem=_mean([r.cloud_output_tokens for r in rows]),
        wasted_tokens_per_problem=_mean([r.wasted_tokens for r in rows]),
        wasted_tokens_per_cloud_step=wasted / cloud_steps if cloud_steps else None,
        edge_compute_s=_mean([r.edge_compute_s for r in rows]), network_s=_mean([r.network_s for r in rows]),
        cloud_queue_s=_mean([r.cloud_queue_s for r in rows]), close_s=_mean([r.close_s for r in rows]),
        other_s=_mean([max(0.0, r.wall_s - p) for r, p in zip(rows, parts, strict=True)]),
    )


# ---- the table ------------------------------------------------------------------------------

TABLE_COLUMNS = (
    "system", "accuracy %", "latency ms", "x llm steps", "cloud steps %", "cloud tokens %",
    "up B/problem", "down B/problem", "cloud compute ms/problem", "wasted tok/problem",
    "wasted tok/cloud step",
)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(summaries: Sequence[SystemSummary]) -> list[list[str]]:
    """The Markdown table's cells, one list per system, in TABLE_COLUMNS order."""
    reference = next((s for s in summaries if s.family == "llm-steps"), None)
    rows = []
    for s in summaries:
        relative = s.latency_mean_s / reference.latency_mean_s if reference else None
        rows.append([
            s.name, f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_se:.1f}", f"{1e3 * s.latency_mean_s:.1f}",
            _cell(relative, ".2f"), f"{100 * s.cloud_step_share:.1f}", f"{100 * s.cloud_token_share:.1f}",
            f"{s.bytes_up_per_problem:.0f}", f"{s.bytes_down_per_problem:.0f}",
            f"{1e3 * s.cloud_compute_s_per_problem:.2f}", f"{s.wasted_tokens_per_problem:.2f}",
            _cell(s.wasted_tokens_per_cloud_step, ".2f"),
        ])
    return rows


COST_COLUMNS = ("system", "cloud in tok/problem", "cloud out tok/problem", "cost per 1k problems",
                "x llm one-call", "x llm steps")


def cost_rows(summaries: Sequence[SystemSummary], prices: Prices) -> list[list[str]]:
    """The cost table's cells: each system's cloud tokens and their price, against the two all-cloud
    systems (one generation of the whole answer; the LLM writing every step)."""
    def cost(s: SystemSummary) -> float:
        return 1000 * prices.of(s.cloud_input_tokens_per_problem, s.cloud_output_tokens_per_problem)

    references = [next((cost(s) for s in summaries if s.family == family), None)
                  for family in ("llm-one-call", "llm-steps")]
    return [[s.name, f"{s.cloud_input_tokens_per_problem:.1f}", f"{s.cloud_output_tokens_per_problem:.1f}",
             f"{cost(s):.4f} {prices.currency}",
             *(_cell(cost(s) / ref if ref else None, ".2f") for ref in references)] for s in summaries]


def cost_table(summaries: Sequence[SystemSummary], prices: Prices) -> str:
    """The cost of each system at `prices`, as GitHub Markdown."""
    lines = ["| " + " | ".join(COST_COLUMNS) + " |", "|" + "---|" * len(COST_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in cost_rows(summaries, prices)]
    return "\n".join(lines) + "\n"


CLOSE_COLUMNS = ("system", "close", "latency mean ms", "median ms", "p90 ms", "close ms/problem",
                 "accuracy %")


def close_pairs(summaries: Sequence[SystemSummary]) -> list[tuple[SystemSummary, SystemSummary]]:
    """(background close, blocking close) for every blocking-close twin whose original ran."""
    by_name = {s.name: s for s in summaries}
    pairs = []
    for twin in (s for s in summaries if s.family == "blocking-close"):
        original = by_name.get(twin.name.removesuffix(BLOCKING_CLOSE_SUFFIX))
        if original is not None:
            pairs.append((original, twin))
    return pairs


def close_table(summaries: Sequence[SystemSummary]) -> str:
    """Per-question latency with the context closed in the background vs by a blocking round trip;
    "" when no blocking-close twin ran."""
    pairs = close_pairs(summaries)
    if not pairs:
        return ""
    lines = ["| " + " | ".join(CLOSE_COLUMNS) + " |", "|" + "---|" * len(CLOSE_COLUMNS)]
    for original, twin in pairs:
        for s, how in ((twin, "blocking"), (original, "background")):
            lines.append(f"| {original.name} | {how} | {1e3 * s.latency_mean_s:.1f} | "
                         f"{1e3 * s.latency_median_s:.1f} | {1e3 * s.latency_p90_s:.1f} | "
                         f"{1e3 * s.close_s:.2f} | {100 * s.accuracy:.1f} |")
        saved = twin.latency_mean_s - original.latency_mean_s
        lines.append(f"| {original.name} | saved | {1e3 * saved:.1f} | "
                     f"{1e3 * (twin.latency_median_s - original.latency_median_s):.1f} | "
                     f"{1e3 * (twin.latency_p90_s - original.latency_p90_s):.1f} | "
                     f"{1e3 * (twin.close_s - original.close_s):.2f} | |")
    return "\n".join(lines) + "\n"


def markdown_table(summaries: Sequence[SystemSummary]) -> str:
    """The paper-shaped table as GitHub Markdown."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summaries)]
    return "\n".join(lines) + "\n"


def csv_text(summaries: Sequence[SystemSummary]) -> str:
    """Every summary field, one row per system."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(SystemSummary)], lineterminator="\n")
    writer.writeheader()
    for summary in summaries:
        writer.writerow(asdict(summary))
    return out.getvalue()


def results_json(summaries: Sequence[SystemSummary], extra: dict[str, Any]) -> str:
    """The summaries plus whatever the caller adds (run info, targets, dev calibration)."""
    return json.dumps({**extra, "systems": [asdict(s) for s in summaries]}, indent=1) + "\n"


def write_problem_records(runs: Sequence[SystemRun], path: Path) -> Path:
    """Every (system, problem) record as JSON lines, for checking any number by hand."""
    with path.open("w", encoding="utf-8") as out:
        for run in runs:
            for record in run.results:
                out.write(json.dumps({"system": run.name, **record.to_dict()}, ensure_ascii=False) + "\n")
    return path
