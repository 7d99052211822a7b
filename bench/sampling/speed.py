"""Sampling at Qwen3's 151,936 logits against greedy, side by side in one run.

    python -m bench.sampling.speed [--model-dir DIR] [--out-dir bench/results/sampling]

1. Rows: per-call cost (median; wall and CPU time) of argmax, the binned nucleus draw that onnx_lm
   now uses, the partial-sort nucleus it used before, the full stable sort (the reference), and the
   entropy now and before, on random rows of three shapes (`bench.sampling.rows`).
2. Decode: an exported model with a 152k vocabulary decodes one prompt greedy and sampled
   (T 0.6, top-p 0.95), interleaved, 2 threads, median of 5: tok/s side by side, and the router's
   per-step overhead (probe entropy + draw on the model's own logits) against a 32-token step.
   Default model: a random Qwen3 (hidden 256, 4 layers, tied) on the real Qwen3 tokenizer,
   logits padded to 151,936 like the real one, built and exported once under .cache/bench-sampling;
   bench/realsize runs the same comparison on the 0.6B.

Results: sampling.md and sampling.json in --out-dir.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.decode.common import (
    REPO_ROOT,
    EnvFlags,
    LoadMeter,
    machine_info,
    prompt_ids,
    run_main,
    write_md_json,
)
from bench.sampling.decode import DecodePlan, greedy_vs_sampled, load, step_overhead
from bench.sampling.rows import CallCost, row_costs


def ensure_model(work_dir: Path) -> Path:
    """The default 152k-vocabulary export (built on first use)."""
    from export.hf_export import ExportOptions, export_checkpoint
    from export.real_tokenizers import build_checkpoint
    from export.shapes import ModelShape

    shape = ModelShape(
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=768,
        max_position_embeddings=2048,
        vocab_size=151_936,
        tie_word_embeddings=True,
    )
    checkpoint, onnx_dir = work_dir / "checkpoint", work_dir / "onnx"
    if not (checkpoint / "config.json").is_file():
        build_checkpoint("qwen3", checkpoint, shape=shape)
    if not (onnx_dir / "manifest.json").is_file():
        export_checkpoint(checkpoint, onnx_dir, ExportOptions())
    return onnx_dir


def decode_section(folder: Path, threads: int, plan: DecodePlan) -> dict[str, Any]:
    """Greedy vs sampled tok/s on `folder`'s model, and the per-step overhead."""
    lm = load(folder, threads)
    prompt = prompt_ids(folder, 16)
    meter = LoadMeter()
    greedy, sampled = greedy_vs_sampled(lm, prompt, plan)
    token_ms = 1e3 / (greedy.decode_tokens_per_s or greedy.tokens_per_s)
    overhead = step_overhead(lm, prompt, token_ms)
    return {
        "model": str(folder),
        "vocab_size": lm.manifest.vocab_size,
        "threads": threads,
        "new_tokens": plan.new_tokens,
        "repeats": plan.repeats,
        "others_cpu_share": meter.others_share(),
        "greedy": greedy.to_dict(),
        "sampled": sampled.to_dict(),
        "sampled_over_greedy": sampled.tokens_per_s / greedy.tokens_per_s,
        "step_overhead": {
            "probe_ms": overhead.probe_ms,
            "token_ms": overhead.token_ms,
            "step_tokens": overhead.step_tokens,
            "fraction": overhead.fraction,
        },
    }


def format_report(rows: list[CallCost], decode: dict[str, Any] | None) -> str:
    lines = [
        "# Sampling at 151,936 logits (T 0.6, top-p 0.95) against greedy",
        "",
        "| row | call | wall ms | CPU ms | nucleus size |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {c.row} | {c.call} | {c.wall_ms:.3f} | {c.cpu_ms:.3f} | {c.kept_tokens} |" for c in rows]
    if decode is not None:
        g, s, o = decode["greedy"], decode["sampled"], decode["step_overhead"]
        share = decode["others_cpu_share"]
        lines += [
            "",
            f"## Decode, {decode['model']} (vocab {decode['vocab_size']}, {decode['threads']} threads, "
            f"{decode['new_tokens']} tokens, median of {decode['repeats']}, other processes "
            f"{'?' if share is None else f'{share:.0%}'} of the CPUs)",
            "",
            "| loop | tok/s | decode tok/s |",
            "|---|---|---|",
            f"| greedy | {g['tokens_per_s']:.2f} | {g['decode_tokens_per_s']:.2f} |",
            f"| sampled | {s['tokens_per_s']:.2f} | {s['decode_tokens_per_s']:.2f} |",
            "",
            f"sampled / greedy: **{decode['sampled_over_greedy']:.3f}**",
            "",
            f"router per step: probe {o['probe_ms']:.2f} ms (entropy + draw) against "
            f"{o['step_tokens']} x {o['token_ms']:.2f} ms: {o['fraction']:.2%}",
        ]
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    flags = EnvFlags(parser, "GLIMP_BENCH_SAMPLING")
    work = str(REPO_ROOT / ".cache" / "bench-sampling")
    flags.value("--work-dir", Path, work, "where the model is built once")
    flags.optional_path("--model-dir", "an exported folder with a 152k vocabulary instead of the default")
    flags.value("--out-dir", Path, str(REPO_ROOT / "bench" / "results" / "sampling"))
    flags.value("--iterations", int, "200", "timed calls per row and call")
    flags.value("--threads", int, "2", "intra-op threads of the decode")
    flags.value("--new-tokens", int, "128")
    flags.value("--repeats", int, "5")
    flags.switch("--no-decode", "time the rows only")


def run(args: argparse.Namespace) -> int:
    rows = row_costs(args.iterations)
    decode = None
    if not args.no_decode:
        folder = args.model_dir or ensure_model(args.work_dir)
        decode = decode_section(folder, args.threads, DecodePlan(args.new_tokens, args.repeats))
    report = format_report(rows, decode)
    print(report)
    machine = machine_info("bench.sampling.speed")
    data = {"machine": machine, "rows": [c.to_dict() for c in rows], "decode": decode}
    for path in write_md_json(args.out_dir, "sampling", report, data):
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench.sampling.speed", __doc__ or "", configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
