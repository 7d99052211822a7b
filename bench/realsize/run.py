"""The real-size run: the random Qwen3-0.6B built, exported, decoded, and set against its contenders.

    make realsize        # = python -m bench.realsize (not in CI: about an hour on 2 cores)

Steps, each cached under --work-dir so a second run only times:
1. the checkpoint (real config, real Qwen3 tokenizer from `make tokenizers`, random weights);
2. memory bandwidth (bench.realsize.bandwidth, numpy, stream style);
3. `glimp export` per precision (one at a time, waiting for free memory first), run under
   bench.realsize.measured: wall time and peak RSS of the export's process tree;
4. decode at batch 1 with --threads: greedy and sampled (T 0.6, top-p 0.95) tok/s, interleaved,
   each as a fraction of bandwidth / bytes of weights read per token (bench.realsize.weights);
   top-1 agreement of each precision with fp32 over fp32's greedy tokens (teacher-forced);
   the router's overhead per step (probe entropy + draw on the model's logits, 32-token step);
5. onnxruntime-genai's builder and decode on the same checkpoint (bench/decode's venv and worker);
6. llama.cpp at Q8_0 and Q4_0 when .venv-llamacpp exists (bench/realsize/setup_llamacpp.sh).
Writes output.txt and run.json to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode.common import REPO_ROOT, EnvFlags, LoadMeter, machine_info, run_main
from bench.realsize import bandwidth
from bench.realsize.checkpoint import ensure_checkpoint, parameter_count
from bench.realsize.weights import bytes_per_token, stored_bytes

log = logging.getLogger(__name__)

PROMPT = "Q: A train leaves at 3 pm and travels 240 km at 80 km/h. When does it arrive? Think step by step."
EXPORT_FLAGS = {"fp32": [], "int8": ["--int8"], "int4": ["--int4"]}
EXPORT_NEED_GB = {("optimum", "fp32"): 9.0, ("optimum", "int8"): 16.0}  # measured peaks + margin
FAST_NEED_GB = 5.0


@dataclass(frozen=True)
class RunConfig:
    work_dir: Path
    out_dir: Path
    graph: str  # "optimum" or "fast" (glimp export --graph)
    precisions: tuple[str, ...]
    threads: int
    new_tokens: int
    repeats: int
    genai_venv: Path | None
    llamacpp_venv: Path | None
    max_wait_s: float


# ---- memory: one heavy step at a time, never below what it needs ------------------------------


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def wait_for_memory(need_gb: float, what: str, max_wait_s: float) -> None:
    deadline = time.monotonic() + max_wait_s
    while available_gb() < need_gb:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"realsize: {what} needs {need_gb:.0f} GB free; only {available_gb():.1f} GB "
                f"after waiting {max_wait_s:.0f} s: stop other work and run again"
            )
        log.info("%s needs %.0f GB, %.1f GB available: waiting", what, need_gb, available_gb())
        time.sleep(15)


# ---- export -------------------------------------------------------------------------------------


def measured_run(command: list[str], log_path: Path) -> dict[str, Any]:
    """COMMAND under bench.realsize.measured; its output to `log_path`, the measurement returned."""
    wrapper = [sys.executable, "-m", "bench.realsize.measured", "--", *command]
    with log_path.open("w") as out:
        done = subprocess.run(wrapper, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    text = log_path.read_text(errors="replace")
    found = re.findall(r"^MEASURED (.*)$", text, flags=re.M)
    record = json.loads(found[-1]) if found else {"returncode": done.returncode}
    record["command"] = shlex.join(command)
    record["log"] = str(log_path)
    return record


def ensure_export(config: RunConfig, checkpoint: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """The export of `precision` (made once, measured); its folder and the measurement."""
    name = f"{config.graph}-{precision}"
    folder, record_path = config.work_dir / name, config.work_dir / f"{name}.export.json"
    if (folder / "manifest.json").is_file() and record_path.is_file():
        return folder, json.loads(record_path.read_text())
    need = EXPORT_NEED_GB.get((config.graph, precision), FAST_NEED_GB)
    wait_for_memory(need, f"the {name} export", config.max_wait_s)
    command = [str(Path(sys.executable).parent / "glimp"), "export", str(checkpoint), str(folder), "--force"]
    command += EXPORT_FLAGS[precision] + (["--graph", config.graph] if config.graph != "optimum" else [])
    free_before = available_gb()
    record = measured_run(command, config.work_dir / f"{name}.export.log")
    if record.get("returncode") != 0 or not (folder / "manifest.json").is_file():
        raise SystemExit(f"realsize: {shlex.join(command)} failed; see {record['log']}")
    record["available_gb_before"] = free_before
    record_path.write_text(json.dumps(record, indent=1))
    return folder, record


# ---- decode -------------------------------------------------------------------------------------


def prompt_tokens(folder: Path) -> list[int]:
    from tokenizers import Tokenizer

    return list(
        Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT, add_special_tokens=False).ids
    )


def agreement(lm: Any, prompt: list[int], reference: list[int]) -> float:
    """Share of positions where `lm`'s argmax equals fp32's greedy token, fed fp32's tokens."""
    cache = lm.new_cache()
    logits = lm.prefill(cache, prompt)
    hits = 0
    for index, token in enumerate(reference):
        hits += int(np.argmax(logits)) == token
        if index + 1 < len(reference):
            logits = lm.decode_one(cache, token)
    return hits / len(reference)


def decode_variant(
    config: RunConfig, folder: Path, prompt: list[int], reference: list[int] | None, genai: Any
) -> dict[str, Any]:
    """Greedy vs sampled (and genai alongside, for fp32), overhead, agreement with fp32."""
    from bench.decode.common import Contender, time_interleaved
    from bench.sampling.decode import DecodePlan, decode_run, load, step_overhead
    from bench.sampling.rows import PAPER
    from onnx_lm.sampling import GREEDY

    lm = load(folder, config.threads)
    plan = DecodePlan(config.new_tokens, config.repeats)
    contenders = [
        Contender("greedy", lambda: decode_run(lm, prompt, plan, GREEDY)),
        Contender("sampled", lambda: decode_run(lm, prompt, plan, PAPER)),
    ]
    if genai is not None:
        contenders.append(genai.contender())
    meter = LoadMeter()
    results = time_interleaved(contenders, plan)
    share = meter.others_share()
    greedy, sampled = results[0], results[1]
    token_ms = 1e3 / (greedy.decode_tokens_per_s or greedy.tokens_per_s)
    overhead = step_overhead(lm, prompt, token_ms)
    out: dict[str, Any] = {
        "others_cpu_share": share,
        "greedy": greedy.to_dict(),
        "sampled": sampled.to_dict(),
        "sampled_over_greedy": sampled.tokens_per_s / greedy.tokens_per_s,
        "probe_ms": overhead.probe_ms,
        "routing_overhead_per_step": overhead.fraction,
        "top1_agreement_with_fp32": 1.0 if reference is None else agreement(lm, prompt, reference),
    }
    if genai is not None:
        out["genai"] = results[2].to_dict()
    return out


# ---- genai and llama.cpp ------------------------------------------------------------------------


def genai_model(config: RunConfig, checkpoint: Path) -> tuple[Path, dict[str, Any]] | None:
    """onnxruntime-genai's builder on the checkpoint (fp32), measured like an export."""
    if config.genai_venv is None or not (config.genai_venv / "bin" / "python").is_file():
        return None
    out_dir, record_path = config.work_dir / "genai-fp32", config.work_dir / "genai-fp32.export.json"
    if (out_dir / "genai_config.json").is_file() and record_path.is_file():
        return out_dir, json.loads(record_path.read_text())
    wait_for_memory(FAST_NEED_GB, "onnxruntime-genai's builder", config.max_wait_s)
    command = [str(config.genai_venv / "bin" / "python"), "-m", "onnxruntime_genai.models.builder"]
    command += ["-i", str(checkpoint), "-o", str(out_dir), "-p", "fp32", "-e", "cpu"]
    command += ["-c", str(config.work_dir / "genai_cache")]
    record = measured_run(command, config.work_dir / "genai-fp32.export.log")
    if record.get("returncode") != 0:
        raise SystemExit(f"realsize: onnxruntime-genai's builder failed; see {record['log']}")
    record_path.write_text(json.dumps(record, indent=1))
    return out_dir, record


def llamacpp_section(config: RunConfig, checkpoint: Path, prompt: list[int], bw: float) -> dict[str, Any]:
    from bench.realsize import llamacpp

    if config.llamacpp_venv is None or not (config.llamacpp_venv / "bin" / "python").is_file():
        return {
            "skipped": f"no llama-cpp-python venv at {config.llamacpp_venv} "
            "(bash bench/realsize/setup_llamacpp.sh makes one)"
        }
    tool = llamacpp.LlamaCpp(config.llamacpp_venv)
    try:
        wait_for_memory(FAST_NEED_GB, "the GGUF conversion", config.max_wait_s)
        files, times = llamacpp.convert(tool, checkpoint, config.work_dir / "gguf")
        out: dict[str, Any] = {"times_s": times}
        for name, path in files.items():
            result = llamacpp.decode(tool, path, prompt, config.new_tokens, config.threads, config.repeats)
            size = path.stat().st_size  # GGUF: the tied embedding stored once, read as the output layer
            result["file_bytes"] = size
            result["limit_tokens_per_s"] = bw / size
            result["greedy_fraction_of_limit"] = result["greedy"]["decode_tokens_per_s"] / (bw / size)
            out[name] = result
        return out
    except (RuntimeError, FileNotFoundError, subprocess.CalledProcessError) as error:
        return {"failed": str(error)}


# ---- the run --------------------------------------------------------------------------------------


def run_all(config: RunConfig) -> dict[str, Any]:
    config.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    wait_for_memory(4.0, "building the checkpoint", config.max_wait_s)
    checkpoint = ensure_checkpoint(
        config.work_dir / "checkpoint", REPO_ROOT / ".cache" / "tokenizers" / "qwen3"
    )
    report: dict[str, Any] = {
        "checkpoint": {
            "path": str(checkpoint),
            "parameters": parameter_count(checkpoint),
            "build_s": time.perf_counter() - started,
        }
    }
    wait_for_memory(2.0, "the bandwidth measurement", config.max_wait_s)
    report["bandwidth"] = bandwidth.measure_all(config.threads, 512)
    bw = report["bandwidth"][f"read_{config.threads}t_gb_s"] * 1e9
    genai = genai_model(config, checkpoint)
    if genai is not None:
        report["genai_build"] = genai[1]
    variants: dict[str, Any] = {}
    reference: list[int] | None = None
    for precision in config.precisions:
        folder, export = ensure_export(config, checkpoint, precision)
        prompt = prompt_tokens(folder)
        worker = _genai_worker(config, genai, prompt) if precision == "fp32" else None
        try:
            result = decode_variant(config, folder, prompt, reference, worker)
        finally:
            if worker is not None:
                worker.close()
        weights = bytes_per_token(folder / "model.onnx")
        result.update(
            export=export,
            stored_bytes=stored_bytes(folder),
            bytes_per_token=weights,
            limit_tokens_per_s=bw / weights,
        )
        result["greedy_fraction_of_limit"] = (
            result["greedy"]["decode_tokens_per_s"] / result["limit_tokens_per_s"]
        )
        if precision == "fp32":
            reference = result["greedy"]["tokens"]
        variants[precision] = result
    report["variants"] = variants
    report["llama_cpp"] = llamacpp_section(config, checkpoint, prompt_tokens(checkpoint), bw)
    return report


def _genai_worker(config: RunConfig, genai: tuple[Path, dict[str, Any]] | None, prompt: list[int]) -> Any:
    if genai is None or config.genai_venv is None:
        return None
    from bench.decode.contenders import GenaiWorker

    return GenaiWorker(config.genai_venv, genai[0], prompt, config.new_tokens, config.threads)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    flags = EnvFlags(parser, "GLIMP_REALSIZE")
    flags.value("--work-dir", Path, str(REPO_ROOT / ".cache" / "realsize"), "checkpoint, exports, GGUF files")
    flags.value("--out-dir", Path, str(REPO_ROOT / "bench" / "results" / "realsize"))
    flags.value("--graph", str, "optimum", "glimp export's graph: optimum or fast")
    flags.value("--precisions", str, "fp32,int8", "comma-separated: fp32 first (the reference), int8, int4")
    flags.value("--threads", int, "2")
    flags.value("--new-tokens", int, "128")
    flags.value("--repeats", int, "3")
    flags.value("--genai-venv", Path, str(REPO_ROOT / ".venv-genai"))
    flags.value("--llamacpp-venv", Path, str(REPO_ROOT / ".venv-llamacpp"))
    flags.value("--max-wait-s", float, "1800", "how long a heavy step waits for free memory")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    precisions = tuple(p for p in args.precisions.split(",") if p)
    unknown = [p for p in precisions if p not in EXPORT_FLAGS]
    if unknown or not precisions or precisions[0] != "fp32":
        raise SystemExit(
            f"realsize: --precisions must start with fp32 and name only {', '.join(EXPORT_FLAGS)}; "
            f"got {args.precisions!r}"
        )
    return RunConfig(
        args.work_dir.resolve(),
        args.out_dir,
        args.graph,
        precisions,
        args.threads,
        args.new_tokens,
        args.repeats,
        args.genai_venv.resolve(),
        args.llamacpp_venv.resolve(),
        args.max_wait_s,
    )


def run(args: argparse.Namespace) -> int:
    from bench.realsize.report import format_report

    config = config_from_args(args)
    load = LoadMeter()
    report = run_all(config)
    report["machine"] = {**machine_info("bench.realsize"), "others_cpu_share_whole_run": load.others_share()}
    report["config"] = {k: str(v) for k, v in vars(args).items()}
    text = format_report(report, config.graph)
    print(text)
    out_dir = config.out_dir / config.graph  # one folder per graph: the runs sit side by side
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "output.txt").write_text(text)
    (out_dir / "run.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench.realsize", __doc__ or "", configure_parser, run, argv)
