"""Which engine serves a folder (`glimp serve DIR --engine auto|onnx|vllm`), and where it runs.

- `onnx`: an exported folder (`manifest.json`, from `glimp export`) under ONNX Runtime, in the
  environment `glimp serve` itself runs in. One step at a time: small clouds, CPU-only clouds.
- `vllm`: a Hugging Face checkpoint folder (`config.json` + weights) on vLLM, continuous batching
  across every context. vLLM needs transformers 5, the export stack pins 4.57, so it runs in the
  cloud role's own environment (`.venv-cloud`, `make cloud-venv`); the model is decoupled, so its
  clients (the edge, the readiness check) call it over Triton's streaming RPC.

`auto` picks by what the folder holds. Both engines sit behind the same Triton model, gateway,
token, supervisor and contract; only the repository and the stub's Python differ.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cloud_service.vllm.repository import is_hf_checkpoint
from glimp_common.errors import BadInputError
from onnx_lm.manifest import MANIFEST_FILE

ONNX, VLLM, AUTO = "onnx", "vllm", "auto"
ENGINES = (AUTO, ONNX, VLLM)
CLOUD_VENV_ENV = "GLIMP_CLOUD_VENV"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLOUD_VENV = REPO_ROOT / ".venv-cloud"


@dataclass(frozen=True)
class Engine:
    """The engine chosen for a folder and what its server needs."""

    name: str  # ONNX or VLLM
    decoupled: bool  # the model answers over ModelStreamInfer only (vLLM streams its steps)
    python_bin: Path  # bin/ of the environment the stub imports from


def choose_engine(model_dir: Path, requested: str = AUTO) -> Engine:
    """The engine for `model_dir`; BadInputError in one line when the folder fits no engine."""
    if requested not in ENGINES:
        raise BadInputError(f"--engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if not model_dir.is_dir():
        raise BadInputError(f"{model_dir} is not a folder: give an exported ONNX folder (glimp export) "
                            "or a Hugging Face checkpoint folder")
    exported, checkpoint = (model_dir / MANIFEST_FILE).is_file(), is_hf_checkpoint(model_dir)
    name = requested if requested != AUTO else ONNX if exported else VLLM if checkpoint else None
    if name is None:
        raise BadInputError(
            f"{model_dir} is neither an exported ONNX folder (no {MANIFEST_FILE}: make one with "
            "`glimp export CHECKPOINT OUT`) nor a Hugging Face checkpoint (config.json and "
            "*.safetensors or *.bin): nothing to serve")
    if name == ONNX and not exported:
        fix = ": export it first (glimp export DIR OUT) or serve it with --engine vllm" if checkpoint else ""
        raise BadInputError(f"--engine onnx serves an exported folder, and {model_dir} has no "
                            f"{MANIFEST_FILE}{fix}")
    if name == VLLM and not checkpoint:
        raise BadInputError(
            f"--engine vllm serves a Hugging Face checkpoint (config.json and weights), and {model_dir} "
            "is not one" + (": it is an ONNX export, serve it with --engine onnx or give the checkpoint "
                            "it was exported from" if exported else ""))
    if name == ONNX:
        return Engine(ONNX, decoupled=False, python_bin=Path(sys.prefix) / "bin")  # this process's own
    return Engine(VLLM, decoupled=True, python_bin=cloud_python_bin())


def cloud_python_bin() -> Path:
    """bin/ of the cloud environment (GLIMP_CLOUD_VENV, default .venv-cloud); BadInputError if absent."""
    venv = Path(os.environ.get(CLOUD_VENV_ENV) or DEFAULT_CLOUD_VENV)
    if not (venv / "bin" / "python3").exists() or not (venv / ".installed-stamp").is_file():
        raise BadInputError(
            f"the vLLM engine runs in the cloud environment, and {venv} is not built: run "
            f"`make cloud-venv` (bash cloud_service/vllm/setup_env.sh), or set {CLOUD_VENV_ENV} to one")
    return venv / "bin"
