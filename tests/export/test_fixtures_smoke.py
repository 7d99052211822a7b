"""The shared tiny-model fixtures produce loadable, proven folders."""

from __future__ import annotations

from pathlib import Path

from onnx_lm.manifest import Manifest


def test_tiny_qwen3_dir_is_a_proven_folder(tiny_qwen3_dir: Path) -> None:
    manifest = Manifest.load(tiny_qwen3_dir)
    assert manifest.architecture == "qwen3"
    assert (tiny_qwen3_dir / "model.onnx").is_file()
    assert manifest.parity["model"]["passed"] is True


def test_tiny_llama_dir_is_a_proven_folder(tiny_llama_dir: Path) -> None:
    manifest = Manifest.load(tiny_llama_dir)
    assert manifest.architecture == "llama"
    assert manifest.parity["model"]["greedy_matched"] == 32
