"""Decode speed of the two graphs `glimp export` writes: optimum's against the fast one.

`python -m bench.decode.graphs` exports the benchmark checkpoint (the random 27M Qwen3 of
`export.shapes`, built once under --work-dir) with `--graph optimum` and `--graph fast` at each
precision, then times onnx_lm's own loop (prefill + decode_one, IO binding) on every folder,
interleaved, greedy, batch 1. The table gives tok/s, the ratio to optimum fp32 and to optimum at
the same precision, node count and weight bytes, whether the greedy tokens equal the fp32 ones,
and each export's own top-1 agreement with transformers fp32 (from its manifest's parity).
Results go to bench/results/decode-fast/decode_graphs.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.decode.common import (
    REPO_ROOT,
    Contender,
    ContenderResult,
    EnvFlags,
    LoadMeter,
    bad_input,
    ensure_export,
    machine_info,
    onnx_lm_generate,
    prompt_ids,
    run_main,
    time_interleaved,
    wait_for_idle,
    write_md_json,
)

# (graph, precision): optimum has no int4 (MatMulNBits is the fast graph's).
EXPORTS = (
    ("optimum", "float32"),
    ("fast", "float32"),
    ("optimum", "int8"),
    ("fast", "int8"),
    ("fast", "int4"),
)


@dataclass(frozen=True)
class GraphsConfig:
    work_dir: Path
    out_dir: Path | None
    prompt_tokens: int = 32
    new_tokens: int = 128
    threads: int = 2
    repeats: int = 5
    warmup: int = 1
    wait_idle_s: float = 0.0
    precisions: tuple[str, ...] = ("float32", "int8", "int4")

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "threads", "repeats"):
            if getattr(self, name) < 1:
                raise bad_input(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = set(self.precisions) - {p for _, p in EXPORTS}
        if unknown or "float32" not in self.precisions:
            raise bad_input(
                f"precisions must include float32 and come from float32, int8, int4; got {self.precisions}"
            )


@dataclass(frozen=True)
class GraphRow:
    """One export's figures."""

    graph: str
    precision: str
    tokens_per_s: float
    decode_tokens_per_s: float | None
    vs_optimum_fp32: float
    vs_optimum_same_precision: float | None  # None where optimum has no such precision (int4)
    nodes: int
    weight_bytes: int
    same_tokens_as_fp32: bool  # greedy tokens equal to optimum fp32's in this run
    top1_vs_transformers: str  # from the export's parity: "agreed/steps"


def _export_contender(folder: Path, name: str, prompt: list[int], config: GraphsConfig) -> Contender:
    from onnx_lm.session import CausalLM, SessionConfig

    lm = CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=config.threads))
    return Contender(name, lambda: onnx_lm_generate(lm, prompt, config.new_tokens), str(folder))


def _folder_figures(folder: Path) -> tuple[int, int, str]:
    """(nodes, weight bytes on disk, top-1 agreement with transformers) of an export folder."""
    import onnx

    from export.quantize import onnx_total_bytes
    from onnx_lm.manifest import Manifest

    manifest = Manifest.load(folder)
    onnx_path = folder / manifest.onnx_file
    nodes = len(onnx.load(str(onnx_path), load_external_data=False).graph.node)
    parity = manifest.parity.get("model", {})
    top1 = f"{parity['top1_agreed']}/{parity['greedy_steps']}" if isinstance(parity, dict) else "n/a"
    return nodes, onnx_total_bytes(onnx_path), top1


def run_graphs(config: GraphsConfig) -> dict[str, Any]:
    """Export what is missing, time every export's decode interleaved, return the report."""
    exports = [(g, p) for g, p in EXPORTS if p in config.precisions]
    folders = {(g, p): ensure_export(config.work_dir, graph=g, precision=None if p == "float32" else p)
               for g, p in exports}
    prompt = prompt_ids(folders[("optimum", "float32")], config.prompt_tokens)
    contenders = [_export_contender(folders[key], f"{key[0]} {key[1]}", prompt, config) for key in exports]
    wait_for_idle(config.wait_idle_s)
    load = LoadMeter()
    results = time_interleaved(contenders, config)
    machine = {**machine_info("bench.decode.graphs"), "others_cpu_share_during_timing": load.others_share()}
    rows = _rows(exports, folders, results)
    return {"config": _plain(asdict(config)), "machine": machine, "prompt_ids": prompt,
            "rows": [asdict(r) for r in rows], "contenders": [r.to_dict() for r in results]}


def _rows(
    exports: list[tuple[str, str]], folders: dict[tuple[str, str], Path], results: list[ContenderResult]
) -> list[GraphRow]:
    by_key = dict(zip(exports, results, strict=True))
    base = by_key[("optimum", "float32")]
    rows = []
    for key, result in by_key.items():
        nodes, weight_bytes, top1 = _folder_figures(folders[key])
        same = by_key.get(("optimum", key[1]))
        rows.append(GraphRow(
            graph=key[0], precision=key[1], tokens_per_s=result.tokens_per_s,
            decode_tokens_per_s=result.decode_tokens_per_s,
            vs_optimum_fp32=result.tokens_per_s / base.tokens_per_s,
            vs_optimum_same_precision=None if same is None else result.tokens_per_s / same.tokens_per_s,
            nodes=nodes, weight_bytes=weight_bytes, same_tokens_as_fp32=result.tokens == base.tokens,
            top1_vs_transformers=top1,
        ))
    return rows


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def format_markdown(report: dict[str, Any]) -> str:
    config, machine = report["config"], report["machine"]
    share = machine.get("others_cpu_share_during_timing")
    lines = [
        "# Decode speed: optimum's graph vs the fast graph (onnx_lm's loop on each)",
        "",
        f"Random 27M Qwen3 (bench-27m), prompt {config['prompt_tokens']} tokens, {config['new_tokens']} new "
        f"tokens, greedy, batch 1, {config['threads']} threads, "
        f"median of {config['repeats']} interleaved runs.",
        f"Other processes' share of the CPUs while timing: {'n/a' if share is None else f'{share:.0%}'}.",
        "",
        "| graph | precision | tok/s | decode tok/s | vs optimum fp32 | vs optimum same precision | nodes "
        "| weight MB | greedy = optimum fp32 | top-1 vs transformers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["rows"]:
        decode = "n/a" if r["decode_tokens_per_s"] is None else f"{r['decode_tokens_per_s']:.1f}"
        same = "n/a" if r["vs_optimum_same_precision"] is None else f"{r['vs_optimum_same_precision']:.2f}x"
        lines.append(
            f"| {r['graph']} | {r['precision']} | {r['tokens_per_s']:.1f} | {decode} | "
            f"{r['vs_optimum_fp32']:.2f}x | {same} | {r['nodes']} | {r['weight_bytes'] / 1e6:.1f} | "
            f"{'yes' if r['same_tokens_as_fp32'] else 'no'} | {r['top1_vs_transformers']} |"
        )
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    flags = EnvFlags(parser, "GLIMP_BENCH_GRAPHS")
    flags.value("--work-dir", Path, str(REPO_ROOT / ".cache" / "bench"), "checkpoint and exports, built once")
    flags.value("--out-dir", Path, str(REPO_ROOT / "bench" / "results" / "decode-fast"), "where results go")
    flags.switch("--no-write", "print only")
    flags.value("--prompt-tokens", int, "32")
    flags.value("--new-tokens", int, "128")
    flags.value("--threads", int, "2", "intra-op threads")
    flags.value("--repeats", int, "5", "timed runs")
    flags.value("--warmup", int, "1", "untimed runs")
    flags.value("--wait-idle-s", float, "0", "wait up to this long for the CPUs to go idle")
    flags.value("--precisions", str, "float32,int8,int4", "comma-separated, float32 included")


def run(args: argparse.Namespace) -> int:
    config = GraphsConfig(
        work_dir=args.work_dir, out_dir=None if args.no_write else args.out_dir,
        prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, threads=args.threads,
        repeats=args.repeats, warmup=args.warmup, wait_idle_s=args.wait_idle_s,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
    )
    report = run_graphs(config)
    markdown = format_markdown(report)
    print(markdown)
    if config.out_dir is not None:
        for path in write_md_json(config.out_dir, "decode_graphs", markdown, report):
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench.decode.graphs", __doc__ or "", configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
