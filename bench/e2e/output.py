"""Writing a benchmark run to its folder: table.md, results.csv, results.json, problems.jsonl,
pareto.png, latency_split.png and run.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.e2e.dev_calibration import DevEntropies
from bench.e2e.plots import plot_latency_split, plot_pareto
from bench.e2e.report import (
    SystemRun,
    SystemSummary,
    close_table,
    cost_table,
    csv_text,
    markdown_table,
    results_json,
    summarize,
    write_problem_records,
)
from bench.e2e.targets import TargetCheck, check_targets
from edge_client.cost import Prices

NOTES = (
    "Latency: wall clock per problem, problems one at a time (batch 1), including the close of the "
    "cloud context at the end of each problem (handed to the link's background closer; a "
    "`blocking-close` row waits for its round trip, as the loop did before; its own bar in "
    "latency_split.png, `close_s` in results.csv).",
    "`llm one-call`: the LLM writes reasoning and answer in one WRITE_ANSWER call from an empty "
    "transcript. Our contract is unary, so it is measured as one unary call: the same end-to-end "
    "latency as a stream; only the time to the first token would differ.",
    "`random @X`, `step-avg @X` and `verify @X` are set to the cloud share that `glimp X` reached "
    "on these problems: random takes it as its probability; step-average (mean entropy of the SLM's "
    "draft) and verify (the LLM's mean log-probability per token of the draft, SpecReason's manner) "
    "take the threshold that sends that share of the dev set's SLM steps to the LLM (calibrated on "
    "the dev problems only).",
    "Cloud steps % counts steps the LLM wrote (a rewritten draft included); cloud tokens % counts "
    "kept tokens (steps and final answer) the LLM wrote. Wasted tokens: generated and thrown away "
    "(GlimpRouter's discarded probe token, a rejected draft).",
    "Bytes up/down: serialized gRPC messages of the LLM calls (KServe ModelInferRequest/Response); "
    "results.csv also has the TCP payload that crossed the emulated link (HTTP/2 framing, the "
    "closing of each cloud context included; the warm-up probe before each system is not).",
    "`llm steps` runs through the same loop as every routed system, so it too syncs the SLM to "
    "the transcript and probes one SLM token per step (counted in edge compute and wasted tokens).",
    "Accuracy ± one binomial standard error.",
)


def write_run(out_dir: Path, runs: Sequence[SystemRun], dev: DevEntropies | None,
              run_info: dict[str, Any], *, plots: bool = True) -> dict[str, Path]:
    """Write every output file (the PNGs only when `plots`); return them by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(r) for r in runs]
    targets = check_targets(runs)
    title = run_info.get("title", "")
    extra = {"run": run_info, "dev_calibration": dev.summary() if dev else None,
             "targets": [t.to_dict() for t in targets]}
    paths = {
        "table": out_dir / "table.md", "csv": out_dir / "results.csv", "json": out_dir / "results.json",
        "problems": out_dir / "problems.jsonl", "run": out_dir / "run.json",
        "pareto": out_dir / "pareto.png", "split": out_dir / "latency_split.png",
    }
    paths["table"].write_text(table_document(summaries=summaries, targets=targets, run_info=run_info),
                              encoding="utf-8")
    paths["csv"].write_text(csv_text(summaries), encoding="utf-8")
    paths["json"].write_text(results_json(summaries, extra), encoding="utf-8")
    paths["run"].write_text(json.dumps(run_info, indent=1) + "\n", encoding="utf-8")
    write_problem_records(runs, paths["problems"])
    if not plots:
        return {kind: path for kind, path in paths.items() if path.suffix != ".png"}
    plot_pareto(summaries, paths["pareto"], title)
    plot_latency_split(summaries, paths["split"], title)
    return paths


def targets_table(targets: Sequence[TargetCheck]) -> str:
    lines = ["| target | measured | met |", "|---|---|---|"]
    for t in targets:
        met = "-" if t.met is None else ("yes" if t.met else "**no**")
        lines.append(f"| {t.target} | {t.measured} | {met} |")
    return "\n".join(lines) + "\n"


def degraded_note(summaries: Sequence[SystemSummary]) -> list[str]:
    """A warning line per system in which cloud calls failed (those steps the SLM wrote)."""
    return [f"- **{s.name}: {s.degraded_steps_per_problem:.3f} degraded steps per problem** (a cloud call "
            "failed and the SLM wrote the step)" for s in summaries if s.degraded_steps_per_problem]


def cost_section(summaries: Sequence[SystemSummary], run_info: dict[str, Any]) -> list[str]:
    """The cost in money at the run's prices (glimp bench --price-in-per-m, --price-out-per-m), if any."""
    given = run_info.get("prices")
    if not given:
        return []
    prices = Prices(**given)
    return [
        f"## Cost at {prices.input_per_m:g} / {prices.output_per_m:g} {prices.currency} per million cloud "
        "input / output tokens", "",
        cost_table(summaries, prices),
        "Input tokens are what the LLM read over every call (prompt, the SLM's steps it caught up on, "
        "a resent transcript); output tokens what it generated (steps, answer, tokens thrown away). "
        "`x llm one-call`: against one LLM generation of the whole answer; `x llm steps`: against the "
        "LLM writing every step through the same loop.", "",
    ]


def close_section(summaries: Sequence[SystemSummary]) -> list[str]:
    """Background vs blocking close of the cloud context, side by side (when a blocking twin ran)."""
    table = close_table(summaries)
    if not table:
        return []
    return [
        "## Closing the cloud context: background vs blocking", "",
        table,
        "`blocking`: the loop waits for the CLOSE round trip before it returns the answer (as before "
        "the link's background closer); `background`: the close is queued and sent by the link's "
        "worker thread while the next question starts. Both rows ran interleaved, problem by "
        "problem, each over its own emulated link. `saved`: blocking minus background.", "",
    ]


def table_document(*, summaries: Sequence[SystemSummary], targets: Sequence[TargetCheck],
                   run_info: dict[str, Any]) -> str:
    """table.md: what was run, the table, how to read it, and the targets."""
    machine = run_info.get("machine", {})
    head = [
        f"# Benchmark: {run_info.get('title', '')}",
        "",
        f"- date: {run_info.get('date', '')}",
        f"- command: `{run_info.get('command', '')}`",
        f"- machine: {machine.get('cpu_model', '')}, {machine.get('nproc', '')} cores; "
        f"{machine.get('uname', '')}",
        "",
        markdown_table(summaries),
        "Notes:",
        *[f"- {note}" for note in NOTES],
        *degraded_note(summaries),
        "",
        *cost_section(summaries, run_info),
        *close_section(summaries),
        "## Targets",
        "",
        targets_table(targets) if targets else "No target could be measured with these systems.\n",
    ]
    return "\n".join(head)
