"""Decode speed at batch 1, side by side in one run: onnx_lm vs optimum vs onnxruntime-genai.

    python -m bench.decode.speed            # builds the ~27M random Qwen3 once under .cache/bench

One random Qwen3-architecture checkpoint (hidden 512, 8 layers, vocab 4096, char tokenizer padded
to 4096 ids) is exported by the project (`export.hf_export.export_checkpoint`, fp32) and converted
by onnxruntime-genai's own model builder. Each contender decodes the same 32-token prompt into
128 greedy tokens with 2 intra-op threads, warm-up first, median of 5:

- onnx_lm: `CausalLM.prefill` + `decode_one` (IO binding, KV cache as OrtValues);
- optimum: `ORTModelForCausalLM.generate` on the same ONNX file (min_new_tokens = max_new_tokens);
- genai: onnxruntime-genai in its own virtual environment (`bench/decode/setup_genai_venv.sh`), run as a
  subprocess of this module (`--worker genai`), which prints its timings as JSON.

It also measures the router's per-step overhead (entropy + sampling of the probe token's logits)
as a fraction of a whole step, and variants of the ONNX Runtime loop that show where time goes
(`--variants`). Results go to bench/results/decode_speed.{md,json}.

The model, timing protocol and load meter are in `bench.decode.common` (shared with
`bench.decode.gpu_check`), the contenders in `bench.decode.contenders`, the variants in
`bench.decode.variants`, the report's formats in `bench.decode.report`. This module is also run
by the genai venv's Python, which lacks the project's packages: keep top-level imports
(bench.decode.* included) to the standard library and numpy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.decode.common import (
    REPO_ROOT,
    Contender,
    EnvFlags,
    LoadMeter,
    bad_input,
    ensure_export,
    machine_info,
    prompt_ids,
    run_main,
    time_interleaved,
    wait_for_idle,
)
from bench.decode.contenders import (
    GenaiWorker,
    ensure_genai_model,
    genai_worker,
    onnx_lm_contender,
    optimum_contender,
)
from bench.decode.report import BenchReport, ProbeOverhead, format_table, write_report
from bench.decode.variants import variant_contenders

if TYPE_CHECKING:
    from export.shapes import ModelShape

QWEN3_VOCAB = 151_936  # a real Qwen3 vocabulary: entropy cost grows with it


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    work_dir: Path  # checkpoint, ONNX export and genai model are built here once and reused
    out_dir: Path | None  # where decode_speed.{md,json} go; None: not written
    prompt_tokens: int = 32
    new_tokens: int = 128
    threads: int = 2  # intra-op threads of every contender
    repeats: int = 5  # timed runs per contender; the median is reported
    warmup: int = 1  # untimed runs first (allocator, thread pool, caches)
    genai_venv: Path | None = None  # None: onnxruntime-genai is left out
    with_optimum: bool = True
    with_variants: bool = False  # also time alternative loops (why onnx_lm is as fast as it is)
    step_tokens: int = 32  # tokens of a reasoning step, for the routing-overhead fraction
    model_dir: Path | None = None  # an existing export to use instead of building the 27M model
    checkpoint_dir: Path | None = None  # its checkpoint, for genai's builder; None: work_dir/checkpoint
    probe_iterations: int = 200  # timed calls of entropy + sampling per vocabulary size
    wait_idle_s: float = 0.0  # wait up to this long for other processes to leave the CPUs alone

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "threads", "repeats", "step_tokens", "probe_iterations"):
            if getattr(self, name) < 1:
                raise bad_input(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise bad_input(f"warmup must be >= 0, got {self.warmup}")

    @property
    def checkpoint(self) -> Path:
        """The Hugging Face checkpoint genai's builder converts."""
        return self.checkpoint_dir or self.work_dir / "checkpoint"


# ---------------------------------------------------------------------------------------------
# Routing overhead: the probe's entropy + sampling (onnx_lm's own functions) against a whole step
# ---------------------------------------------------------------------------------------------


PROBE_MODES = {"greedy": "greedy", "sampled": "T=0.6, top-p=0.95"}


def probe_seconds(vocab_size: int, mode: str, *, iterations: int = 200, seed: int = 0) -> float:
    """Median time of entropy + sampling (as `mode` says) on one random row of `vocab_size` logits."""
    from onnx_lm.sampling import GREEDY, SamplingParams, entropy_nats, sample_token

    params = GREEDY if mode == "greedy" else SamplingParams(temperature=0.6, top_p=0.95, seed=seed)
    rng = np.random.default_rng(seed)
    # Scale 3: a spread like a real LM's logits (a few dominant tokens, a long tail).
    logits = (rng.standard_normal(vocab_size) * 3.0).astype(np.float32)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        entropy_nats(logits)
        sample_token(logits, params, rng)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def routing_overhead(
    per_token_s: float, step_tokens: int, vocab_sizes: Sequence[int], iterations: int = 200
) -> list[ProbeOverhead]:
    """Probe cost for each vocabulary size, greedy and with the paper's sampling."""
    return [
        ProbeOverhead(
            vocab_size=vocab,
            sampling=label,
            probe_s=probe_seconds(vocab, mode, iterations=iterations),
            step_s=per_token_s * step_tokens,
            step_tokens=step_tokens,
        )
        for vocab in vocab_sizes
        for mode, label in PROBE_MODES.items()
    ]


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def run_benchmark(config: BenchConfig, shape: ModelShape | None = None) -> BenchReport:
    """Build what is missing, time every contender on the same prompt, measure the overhead."""
    import torch

    torch.set_num_threads(config.threads)  # optimum's generate does its logits work in torch
    folder = config.model_dir or ensure_export(config.work_dir, shape)
    prompt = prompt_ids(folder, config.prompt_tokens)
    worker = _genai_worker(config, prompt)
    contenders = _contenders(folder, prompt, config, worker)
    wait_for_idle(config.wait_idle_s)
    load = LoadMeter()
    try:
        results = time_interleaved(contenders, config)
    finally:
        if worker is not None:
            worker.close()
    machine = {**machine_info(), "others_cpu_share_during_timing": load.others_share()}
    per_token_s = 1.0 / (results[0].decode_tokens_per_s or results[0].tokens_per_s)
    overhead = routing_overhead(
        per_token_s, config.step_tokens, _vocab_sizes(folder), config.probe_iterations
    )
    same = {r.name: r.tokens == results[0].tokens for r in results[1:]}
    return BenchReport(
        _config_dict(config), machine, _model_info(folder, prompt, config.checkpoint), results, overhead, same
    )


def _genai_worker(config: BenchConfig, prompt: list[int]) -> GenaiWorker | None:
    """The genai worker (its model built first when missing); None when genai is left out."""
    if config.genai_venv is None:
        return None
    genai_dir = ensure_genai_model(config.checkpoint, config.work_dir / "genai", config.genai_venv)
    return GenaiWorker(config.genai_venv, genai_dir, prompt, config.new_tokens, config.threads)


def _contenders(
    folder: Path, prompt: list[int], config: BenchConfig, worker: GenaiWorker | None
) -> list[Contender]:
    """onnx_lm first (the reference), then optimum, genai and the variants as configured."""
    contenders = [onnx_lm_contender(folder, prompt, config.new_tokens, config.threads)]
    if config.with_optimum:
        contenders.append(optimum_contender(folder, prompt, config.new_tokens, config.threads))
    if worker is not None:
        contenders.append(worker.contender())
    if config.with_variants:
        contenders += variant_contenders(
            folder, prompt, config.new_tokens, config.threads, config.work_dir, config.checkpoint
        )
    return contenders


def _vocab_sizes(folder: Path) -> list[int]:
    from onnx_lm.manifest import Manifest

    return list(dict.fromkeys([Manifest.load(folder).vocab_size, QWEN3_VOCAB]))


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def _model_info(folder: Path, prompt: list[int], checkpoint: Path) -> dict[str, Any]:
    from onnx_lm.manifest import Manifest

    manifest = Manifest.load(folder)
    return {
        "folder": str(folder),
        "architecture": manifest.architecture,
        "dtype": manifest.dtype,
        "vocab_size": manifest.vocab_size,
        "num_layers": manifest.kv.num_layers,
        "parameters": _checkpoint_parameter_count(checkpoint),
        "onnx_weight_elements": _onnx_parameter_count(folder / manifest.onnx_file),
        "prompt_ids": prompt,
    }


def _checkpoint_parameter_count(checkpoint: Path) -> int | None:
    """Parameters of the checkpoint, from the safetensors header (no weights read)."""
    path = checkpoint / "model.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")


def _onnx_parameter_count(onnx_path: Path) -> int:
    """Elements of the graph's float weight matrices (a tied embedding may be stored twice)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    weights = [t for t in model.graph.initializer if t.data_type in floats and len(t.dims) > 1]
    return sum(int(np.prod(t.dims)) for t in weights)


# ---------------------------------------------------------------------------------------------
# Command line (every flag has a GLIMP_BENCH_* environment twin)
# ---------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `glimp bench-decode` / `python -m bench.decode.speed`."""
    flags = EnvFlags(parser, "GLIMP_BENCH")
    flags.value(
        "--work-dir",
        Path,
        str(REPO_ROOT / ".cache" / "bench"),
        "where the checkpoint, export and genai model are built once",
    )
    flags.optional_path("--model-dir", "use this exported folder instead of building the 27M model")
    flags.optional_path("--checkpoint-dir", "the checkpoint of --model-dir, for genai's builder")
    results = str(REPO_ROOT / "bench" / "results")
    flags.value("--out-dir", Path, results, "where decode_speed.md/json are written")
    flags.switch("--no-write", "print only, write no results")
    flags.value("--prompt-tokens", int, "32")
    flags.value("--new-tokens", int, "128")
    flags.value("--threads", int, "2", "intra-op threads")
    flags.value("--repeats", int, "5", "timed runs")
    flags.value("--warmup", int, "1", "untimed runs")
    flags.value("--step-tokens", int, "32", "tokens of a reasoning step for the overhead fraction")
    genai_venv = str(REPO_ROOT / ".venv-genai")
    flags.value("--genai-venv", Path, genai_venv, "venv made by bench/decode/setup_genai_venv.sh")
    flags.switch("--no-genai", "leave onnxruntime-genai out")
    flags.switch("--no-optimum", "leave optimum out")
    flags.value(
        "--wait-idle-s", float, "0", "wait up to this long for other processes to leave the CPUs idle"
    )
    flags.switch("--variants", "also time alternative ONNX Runtime loops")
    # Internal: the genai worker, run by this module inside the genai venv.
    parser.add_argument("--worker", choices=["genai"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--genai-model", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prompt-ids", default="", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    # Absolute: the worker runs the venv's python from another working directory.
    genai = None if args.no_genai else args.genai_venv.absolute()
    if genai is not None and not (genai / "bin" / "python").is_file():
        raise bad_input(
            f"no genai venv at {genai}: run `bash bench/decode/setup_genai_venv.sh` or pass --no-genai"
        )
    return BenchConfig(
        work_dir=args.work_dir,
        out_dir=None if args.no_write else args.out_dir,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        genai_venv=genai,
        with_optimum=not args.no_optimum,
        with_variants=args.variants,
        step_tokens=args.step_tokens,
        model_dir=args.model_dir,
        checkpoint_dir=args.checkpoint_dir,
        wait_idle_s=args.wait_idle_s,
    )


def run(args: argparse.Namespace) -> int:
    if args.worker == "genai":
        prompt = [int(t) for t in args.prompt_ids.split(",")]
        genai_worker(args.genai_model, prompt, args.new_tokens, args.threads)
        return 0
    report = run_benchmark(config_from_args(args))
    print(format_table(report))
    if not args.no_write:
        for path in write_report(report, args.out_dir):
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench.decode.speed", __doc__ or "", configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
