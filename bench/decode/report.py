"""The decode benchmark's report: what one run measured, as JSON, Markdown and a console table.

The field names and layout are those of bench/results/decode_speed.{md,json}: keep them stable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.decode.common import ContenderResult, write_md_json


@dataclass(frozen=True)
class ProbeOverhead:
    """Router cost per step: entropy + sampling of the probe logits, against a whole step."""

    vocab_size: int
    sampling: str  # "greedy" or "T=0.6, top-p=0.95" (the paper's step settings)
    probe_s: float  # median of entropy_nats + sample_token on one row of logits
    step_s: float  # step_tokens x the onnx_lm per-token decode time measured in this run
    step_tokens: int

    @property
    def fraction(self) -> float:
        return self.probe_s / self.step_s


@dataclass
class BenchReport:
    """Everything one run measured."""

    config: dict[str, Any]
    machine: dict[str, Any]
    model: dict[str, Any]
    contenders: list[ContenderResult]
    overhead: list[ProbeOverhead] = field(default_factory=list)
    same_greedy_tokens: dict[str, bool] = field(default_factory=dict)

    def baseline(self) -> ContenderResult | None:
        return next((c for c in self.contenders if c.name == "onnxruntime-genai"), None)

    def to_dict(self) -> dict[str, Any]:
        base = self.baseline()
        return {
            "config": self.config,
            "machine": self.machine,
            "model": self.model,
            "contenders": [
                {**c.to_dict(), "ratio_to_genai": c.tokens_per_s / base.tokens_per_s if base else None}
                for c in self.contenders
            ],
            "same_greedy_tokens": self.same_greedy_tokens,
            "routing_overhead": [{**asdict(o), "fraction": o.fraction} for o in self.overhead],
        }


def render_markdown(report: BenchReport) -> str:
    """The report as a Markdown page: tok/s table, ratios, token agreement, routing overhead."""
    lines = _markdown_header(report) + _markdown_contenders(report) + _markdown_overhead(report)
    return "\n".join(lines)


def _markdown_header(report: BenchReport) -> list[str]:
    cfg, machine, model = report.config, report.machine, report.model
    return [
        "# Decode speed at batch 1 (CPU)",
        "",
        f"- Date (UTC): {machine['date_utc']}; command: `{machine['command']}`",
        f"- Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), {machine['platform']}, "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}",
        f"- CPU share other processes used while timing: "
        f"{_percent(machine.get('others_cpu_share_during_timing'))} (the machine is shared; "
        "timed runs are interleaved so that load falls on every contender alike)",
        f"- Model: random {model['architecture']}, {_millions(model['parameters'])} parameters "
        f"(the ONNX graph's weight matrices hold {_millions(model['onnx_weight_elements'])}), "
        f"{model['num_layers']} layers, vocab {model['vocab_size']}, {model['dtype']}",
        f"- Protocol: {cfg['prompt_tokens']}-token prompt, {cfg['new_tokens']} new greedy tokens, "
        f"{cfg['threads']} intra-op threads, {cfg['warmup']} warm-up run(s), median of {cfg['repeats']}",
        "- tok/s = new tokens / whole generation time (prefill included); decode tok/s = "
        "(new tokens - 1) / time after prefill",
        "",
    ]


def _markdown_contenders(report: BenchReport) -> list[str]:
    base = report.baseline()
    lines = [
        "| contender | tok/s | decode tok/s | x genai | same greedy tokens as onnx_lm | notes |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report.to_dict()["contenders"]:
        decode = f"{row['decode_tokens_per_s']:.1f}" if row["decode_tokens_per_s"] else "-"
        ratio = f"{row['ratio_to_genai']:.3f}" if base else "-"
        same = "(reference)" if row["name"] == "onnx_lm" else str(report.same_greedy_tokens.get(row["name"]))
        lines.append(
            f"| {row['name']} | {row['tokens_per_s']:.1f} | {decode} | {ratio} | {same} | {row['notes']} |"
        )
    return lines


def _markdown_overhead(report: BenchReport) -> list[str]:
    lines = [
        "",
        "## Routing overhead per step (probe logits: entropy_nats + sample_token)",
        "",
        "| vocab | sampling | probe (ms) | step of N tokens (ms) | fraction |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {o.vocab_size} | {o.sampling} | {o.probe_s * 1e3:.3f} | "
        f"{o.step_s * 1e3:.1f} (N={o.step_tokens}) | {o.fraction:.2%} |"
        for o in report.overhead
    ]
    return lines + [
        "",
        "The step time is N x this model's measured onnx_lm decode time per token; for a "
        "real Qwen3-size model the step is far slower, so its fraction is smaller still.",
        "",
    ]


def _millions(count: int | None) -> str:
    return "?" if count is None else f"{count / 1e6:.1f}M"


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def write_report(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    return write_md_json(out_dir, "decode_speed", render_markdown(report), report.to_dict())


def format_table(report: BenchReport) -> str:
    base = report.baseline()
    rows = [f"{'contender':<42} {'tok/s':>8} {'decode':>8} {'x genai':>8}  same tokens"]
    for c in report.contenders:
        decode = f"{c.decode_tokens_per_s:8.1f}" if c.decode_tokens_per_s else f"{'-':>8}"
        ratio = f"{c.tokens_per_s / base.tokens_per_s:8.3f}" if base else f"{'-':>8}"
        same = "ref" if c is report.contenders[0] else str(report.same_greedy_tokens.get(c.name))
        rows.append(f"{c.name:<42} {c.tokens_per_s:8.1f} {decode} {ratio}  {same}")
    rows.append("")
    rows += [
        f"routing overhead, vocab {o.vocab_size:>6}, {o.sampling:<17}: probe {o.probe_s * 1e3:7.3f} ms "
        f"= {o.fraction:6.2%} of a {o.step_tokens}-token step"
        for o in report.overhead
    ]
    return "\n".join(rows)
