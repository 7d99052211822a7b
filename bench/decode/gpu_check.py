"""GPU checks of the ONNX runtime, run on a machine with an NVIDIA GPU and onnxruntime-gpu.

    python -m bench.decode.gpu_check --work-dir .cache/gpu --out-dir bench/results

On the benchmark's random Qwen3 (~27M parameters, built and exported by the project on first use,
fp32 and, when the exporter supports it, fp16) it checks that:

1. `CausalLM.load(..., SessionConfig(providers="auto"))` picks a GPU provider, proven by a real run;
2. the KV cache stays on the GPU (`OrtValue.device_name()` of every key/value is "cuda");
3. CPU and CUDA agree: max |logit difference| over the prefill and every decode step (both fed the
   same tokens), and identical greedy tokens when each decodes on its own;
4. decode speed on the GPU (the decode benchmark's protocol: 32-token prompt, 128 greedy tokens,
   median of 5 after a warm-up), CPU alongside for scale;
5. the fp16 export loads and runs on CUDA, with its parity against the fp32 CPU run.

Writes gpu_check.{json,md} to --out-dir and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode.common import (
    REPO_ROOT,
    Contender,
    ContenderResult,
    EnvFlags,
    ensure_export,
    machine_info,
    onnx_lm_generate,
    prompt_ids,
    run_main,
    time_interleaved,
    write_md_json,
)
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# fp32 CPU vs fp32 CUDA: different kernels and summation orders. Measured on an H200 with the 27M
# model (logits up to ~8): 0.018 after the prefill, 0.014 while decoding, greedy tokens identical.
FP32_LOGIT_TOLERANCE = 5e-2
# fp16 vs fp32 reference: the exporter's own parity bound for fp16 is looser.
FP16_LOGIT_TOLERANCE = 0.5


@dataclass(frozen=True)
class GpuCheckConfig:
    """One run of the GPU checks."""

    work_dir: Path  # checkpoint and exports are built here once
    out_dir: Path | None  # gpu_check.{json,md}; None: not written
    model_dir: Path | None = None  # an existing fp32 export instead of building the 27M model
    prompt_tokens: int = 32
    new_tokens: int = 128
    repeats: int = 5
    warmup: int = 1
    cpu_threads: int = 2  # the CPU side of the parity run and its tok/s, as in the CPU benchmark
    with_fp16: bool = True

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "repeats", "cpu_threads"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise BadInputError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class Check:
    """One named check: passed or not, with the figures that decided it."""

    name: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class GpuReport:
    machine: dict[str, Any]
    runtime: dict[str, Any]
    checks: list[Check]
    speed: list[ContenderResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "machine": self.machine,
            "runtime": self.runtime,
            "checks": [asdict(c) for c in self.checks],
            "speed": [s.to_dict() for s in self.speed],
        }


def runtime_info() -> dict[str, Any]:
    """onnxruntime build, its providers, and the GPU as torch sees it (when torch is there)."""
    import onnxruntime as ort

    info: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def load_cuda_libraries() -> None:
    """Make CUDA/cuDNN from the nvidia-* pip packages loadable before a CUDA session is made.

    torch (built for the same CUDA major) loads them when imported; `preload_dlls` covers the
    case without torch. Both are harmless where the libraries are already on the loader path.
    """
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401  (loading it maps libcudart/libcublas/libcudnn)
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def check_auto_provider(lm: Any, prompt: list[int]) -> Check:
    """The "auto" choice a GPU provider, the session runs on it, and the KV cache lives on the device."""
    cache = lm.new_cache()
    lm.prefill(cache, prompt)
    devices = sorted({v.device_name() for v in (*cache.keys, *cache.values)})
    session_providers = lm.session_providers  # what ONNX Runtime really built
    figures = {
        "chosen": lm.provider.name,
        "session_providers": session_providers,
        "provider_options": _provider_options(lm),
        "kv_device_names": devices,
        "kv_bytes": cache.nbytes,
    }
    passed = (
        lm.provider.name in GPU_PROVIDERS and session_providers[0] == lm.provider.name and devices == ["cuda"]
    )
    return Check("auto provider is a GPU one and the KV cache stays on the GPU", passed, figures)


# Provider options worth recording next to parity figures (use_tf32 changes fp32 matmul precision).
_SHOWN_OPTIONS = ("device_id", "use_tf32", "cudnn_conv_algo_search", "enable_cuda_graph")


def _provider_options(lm: Any) -> dict[str, str]:
    """The chosen provider's options as the session holds them.

    CausalLM has no public accessor for these (only `session_providers`), so this check script
    reads its private session; the figure is informational and does not decide the check.
    """
    options = lm._session.get_provider_options().get(lm.provider.name, {})
    return {k: v for k, v in options.items() if k in _SHOWN_OPTIONS}


def teacher_forced_logits(lm: Any, prompt: list[int], tokens: list[int]) -> list[np.ndarray]:
    """Logits after the prompt and after each of `tokens[:-1]`, fed in order."""
    cache = lm.new_cache()
    rows = [lm.prefill(cache, prompt)]
    rows += [lm.decode_one(cache, t) for t in tokens[:-1]]
    return rows


def check_parity(
    name: str, reference: Any, candidate: Any, prompt: list[int], new_tokens: int, tolerance: float
) -> Check:
    """Greedy tokens of each side on its own; logits of both fed the reference's tokens."""
    ref_tokens, _ = onnx_lm_generate(reference, prompt, new_tokens)
    cand_tokens, _ = onnx_lm_generate(candidate, prompt, new_tokens)
    ref_rows = teacher_forced_logits(reference, prompt, ref_tokens)
    cand_rows = teacher_forced_logits(candidate, prompt, ref_tokens)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ref_rows, cand_rows, strict=True)]
    top1 = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(ref_rows, cand_rows, strict=True))
    pairs = enumerate(zip(ref_tokens, cand_tokens, strict=True))
    first_diverging = next((i for i, (a, b) in pairs if a != b), None)
    figures = {
        "max_abs_logit_diff_prefill": diffs[0],
        "max_abs_logit_diff_decode": max(diffs[1:], default=0.0),
        "tolerance": tolerance,
        "greedy_tokens_identical": ref_tokens == cand_tokens,
        "first_diverging_token": first_diverging,
        "top1_agreement": f"{top1}/{len(ref_rows)}",
        "tokens_compared": new_tokens,
        "max_abs_logit_reference": float(max(np.abs(r).max() for r in ref_rows)),  # the scale of the diffs
    }
    passed = max(diffs) <= tolerance and ref_tokens == cand_tokens
    return Check(name, passed, figures)


def check_fp16(config: GpuCheckConfig, cpu_fp32: Any, prompt: list[int]) -> tuple[Check | None, Any]:
    """Export fp16 (if the exporter can), load it with "auto", compare it to the fp32 CPU run."""
    from onnx_lm.session import CausalLM, SessionConfig

    try:
        folder = ensure_export(config.work_dir, dtype="float16")
    except Exception as exc:  # an exporter without fp16 support is a finding, not a crash
        return Check("fp16 export loads and runs on CUDA", False, {"export_error": str(exc)[:2000]}), None
    lm = CausalLM.load(folder, SessionConfig(providers="auto"))
    parity = check_parity(
        "fp16 on CUDA vs fp32 on CPU", cpu_fp32, lm, prompt, config.new_tokens, FP16_LOGIT_TOLERANCE
    )
    parity.figures["provider"] = lm.provider.name
    parity.figures["manifest_parity"] = lm.manifest.parity
    # Greedy tokens of a random model may part ways after a near-tie; the logit bound decides.
    parity.passed = lm.provider.name in GPU_PROVIDERS and (
        parity.figures["max_abs_logit_diff_prefill"] <= FP16_LOGIT_TOLERANCE
    )
    return parity, lm


def speed_contender(name: str, lm: Any, prompt: list[int], new_tokens: int) -> Contender:
    return Contender(name, lambda: onnx_lm_generate(lm, prompt, new_tokens), "onnx_lm loop, IO binding")


def run_checks(config: GpuCheckConfig) -> GpuReport:
    """Build or reuse the model, then run every check; nothing here raises on a failed check."""
    from onnx_lm.session import CausalLM, SessionConfig

    load_cuda_libraries()
    folder = config.model_dir or ensure_export(config.work_dir)
    prompt = prompt_ids(folder, config.prompt_tokens)
    gpu = CausalLM.load(folder, SessionConfig(providers="auto"))
    cpu = CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=config.cpu_threads))
    checks = [
        check_auto_provider(gpu, prompt),
        check_parity("fp32: CUDA vs CPU", cpu, gpu, prompt, config.new_tokens, FP32_LOGIT_TOLERANCE),
    ]
    labelled = [
        (f"fp32 on {gpu.provider.short_name}", gpu),
        (f"fp32 on cpu, {config.cpu_threads} threads", cpu),
    ]
    if config.with_fp16:
        fp16_check, fp16_lm = check_fp16(config, cpu, prompt)
        if fp16_check is not None:
            checks.append(fp16_check)
        if fp16_lm is not None:
            labelled.insert(1, (f"fp16 on {fp16_lm.provider.short_name}", fp16_lm))
    contenders = [speed_contender(name, lm, prompt, config.new_tokens) for name, lm in labelled]
    speed = time_interleaved(contenders, config)
    return GpuReport(machine_info("bench.decode.gpu_check"), runtime_info(), checks, speed)


# ---------------------------------------------------------------------------------------------
# Output and command line
# ---------------------------------------------------------------------------------------------


def render_markdown(report: GpuReport) -> str:
    runtime = report.runtime
    lines = [
        "# GPU checks of the ONNX runtime",
        "",
        f"- Date (UTC): {report.machine['date_utc']}; command: `{report.machine['command']}`",
        f"- GPU: {runtime.get('gpu', '?')}; onnxruntime {runtime['onnxruntime']} "
        f"(providers: {', '.join(runtime['available_providers'])}); CPU: {report.machine['cpu']} "
        f"({report.machine['logical_cpus']} logical)",
        f"- All checks passed: {report.passed}",
        "",
        "| check | passed | figures |",
        "| --- | --- | --- |",
    ]
    for check in report.checks:
        shown = {k: v for k, v in check.figures.items() if k != "manifest_parity"}
        lines.append(f"| {check.name} | {check.passed} | `{json.dumps(shown)}` |")
    lines += [
        "",
        "## Decode speed (32-token prompt, 128 greedy tokens, median of 5)",
        "",
        "| model / provider | tok/s | decode tok/s |",
        "| --- | ---: | ---: |",
    ]
    for s in report.speed:
        decode = f"{s.decode_tokens_per_s:.1f}" if s.decode_tokens_per_s else "-"
        lines.append(f"| {s.name} | {s.tokens_per_s:.1f} | {decode} |")
    return "\n".join(lines) + "\n"


def write_report(report: GpuReport, out_dir: Path) -> list[Path]:
    md, js = write_md_json(out_dir, "gpu_check", render_markdown(report), report.to_dict())
    return [js, md]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `glimp gpu-check` / `python -m bench.decode.gpu_check`; each has a GLIMP_GPU_CHECK_* twin."""
    flags = EnvFlags(parser, "GLIMP_GPU_CHECK")
    work_dir = str(REPO_ROOT / ".cache" / "gpu")
    flags.value("--work-dir", Path, work_dir, "where the checkpoint and exports are built")
    flags.optional_path("--model-dir", "an existing fp32 export to check instead")
    results = str(REPO_ROOT / "bench" / "results")
    flags.value("--out-dir", Path, results, "where gpu_check.{json,md} go")
    flags.value("--new-tokens", int, "128")
    flags.value("--repeats", int, "5")
    flags.value("--cpu-threads", int, "2")
    flags.switch("--no-fp16", "skip the fp16 export check")


def run(args: argparse.Namespace) -> int:
    config = GpuCheckConfig(
        work_dir=args.work_dir,
        out_dir=args.out_dir,
        model_dir=args.model_dir,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        cpu_threads=args.cpu_threads,
        with_fp16=not args.no_fp16,
    )
    report = run_checks(config)
    print(render_markdown(report))
    if config.out_dir is not None:
        for path in write_report(report, config.out_dir):
            print(f"wrote {path}")
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench.decode.gpu_check", __doc__ or "", configure_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
