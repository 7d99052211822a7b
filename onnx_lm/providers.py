"""Choosing ONNX Runtime execution providers.

A provider that is merely *listed* by onnxruntime-gpu may still fail at run time (no CUDA
libraries, no TensorRT). So a provider is only accepted after the session reports it as its
first provider and a real forward call succeeds (the caller does that call: see session.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from glimp_common.errors import BadInputError

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Fastest first. Short names are what users type in flags and env vars.
PREFERENCE = (TENSORRT, CUDA, CPU)
SHORT_NAMES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}


@dataclass(frozen=True)
class ProviderChoice:
    """One candidate: the provider list handed to the session, and where IO binding puts tensors."""

    name: str
    session_providers: tuple[str, ...]
    device: str  # "cuda" or "cpu": where the KV cache lives

    @property
    def short_name(self) -> str:
        return {TENSORRT: "tensorrt", CUDA: "cuda", CPU: "cpu"}[self.name]


def resolve_name(name: str) -> str:
    """Map "cuda" / "CUDAExecutionProvider" to the full provider name."""
    full = SHORT_NAMES.get(name.lower(), name)
    if full not in PREFERENCE:
        raise BadInputError(
            f"unknown execution provider {name!r}; use one of: auto, {', '.join(sorted(SHORT_NAMES))}"
        )
    return full


def candidates(requested: str | Sequence[str] | None = "auto") -> list[ProviderChoice]:
    """Providers to try, in order. "auto" (or None): every available one, fastest first."""
    available = set(ort.get_available_providers())
    if requested is None or requested == "auto":
        # onnxruntime-gpu lists its GPU providers even on machines without a GPU; trying them
        # there only fills the log with library errors, so "auto" first looks for a GPU device.
        gpu_ok = has_gpu_device()
        names = [p for p in PREFERENCE if p in available and (p == CPU or gpu_ok)]
    else:
        wanted = [requested] if isinstance(requested, str) else list(requested)
        names = [resolve_name(n) for n in wanted]
        absent = [n for n in names if n not in available]
        if absent:
            raise BadInputError(
                f"execution provider(s) {', '.join(absent)} are not in this onnxruntime build "
                f"(available: {', '.join(sorted(available))}); install onnxruntime-gpu or choose cpu"
            )
    return [_choice(n) for n in names]


def has_gpu_device() -> bool:
    """Whether an NVIDIA GPU device node exists (desktop/server driver or Jetson's nvgpu)."""
    return any(Path(node).exists() for node in _GPU_DEVICE_NODES)


_GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/nvgpu", "/dev/nvhost-ctrl-gpu")


def _choice(name: str) -> ProviderChoice:
    if name == CPU:
        return ProviderChoice(CPU, (CPU,), "cpu")
    # TensorRT falls back to CUDA for unsupported nodes; both keep tensors on the GPU.
    chain = (TENSORRT, CUDA, CPU) if name == TENSORRT else (CUDA, CPU)
    return ProviderChoice(name, chain, "cuda")
