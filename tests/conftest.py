"""Root fixtures: tiny real-architecture models, exported once per test session, and markers.

`tiny_qwen3_dir` / `tiny_llama_dir` are exported ONNX model folders (fp32, parity proven);
`tiny_qwen3_checkpoint` / `tiny_llama_checkpoint` are the Hugging Face folders they came from.
Tests must treat them as read-only: copy a folder before changing it.

The `gpu` marker skips a test unless onnxruntime lists CUDAExecutionProvider *and* a real
run on it succeeds (onnxruntime-gpu lists CUDA even on machines without a GPU).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cloud_service.security import TLSFiles


def _export(family: str, factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from export.hf_export import export_checkpoint
    from export.shapes import SHAPES, build_random_checkpoint

    base = factory.mktemp(f"tiny_{family}")
    checkpoint = build_random_checkpoint(family, SHAPES["tiny"], base / "checkpoint")
    export_checkpoint(checkpoint, base / "onnx")
    return checkpoint, base / "onnx"


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF checkpoint folder, exported ONNX folder) of a tiny random Qwen3."""
    return _export("qwen3", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF checkpoint folder, exported ONNX folder) of a tiny random Llama."""
    return _export("llama", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_qwen3_checkpoint(tiny_qwen3: tuple[Path, Path]) -> Path:
    """Hugging Face folder of a tiny random Qwen3 (config, safetensors, char tokenizer)."""
    return tiny_qwen3[0]


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tiny_qwen3: tuple[Path, Path]) -> Path:
    """Exported fp32 ONNX folder (model.onnx, tokenizer, manifest.json) of a tiny Qwen3."""
    return tiny_qwen3[1]


@pytest.fixture(scope="session")
def tiny_llama_checkpoint(tiny_llama: tuple[Path, Path]) -> Path:
    """Hugging Face folder of a tiny random Llama."""
    return tiny_llama[0]


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama: tuple[Path, Path]) -> Path:
    """Exported fp32 ONNX folder of a tiny Llama."""
    return tiny_llama[1]


@functools.cache
def cuda_works() -> bool:
    """True when ONNX Runtime's CUDA EP is listed and really runs a one-node graph."""
    import numpy as np
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        session = ort.InferenceSession(_identity_model_bytes(), providers=["CUDAExecutionProvider"])
        out = session.run(None, {"x": np.ones((2,), dtype=np.float32)})[0]
    except Exception:  # no driver, no CUDA libraries: the EP fails at session or run time
        return False
    return session.get_providers()[0] == "CUDAExecutionProvider" and bool((out == 2.0).all())


def _identity_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    return model.SerializeToString()


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A certificate for 127.0.0.1/localhost, made with the openssl CLI."""
    from cloud_service.security import TLSFiles

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return TLSFiles(cert, key)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items or cuda_works():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU that ONNX Runtime's CUDA EP can run on")
    for item in gpu_items:
        item.add_marker(skip)
