"""Exporting tiny real-architecture checkpoints: folder contents, manifest, parity figures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from export import quantize
from export.hf_export import ExportOptions, export_checkpoint
from export.shapes import SHAPES, build_random_checkpoint
from export.tiny import EOS_TOKEN
from onnx_lm import CausalLM
from onnx_lm.manifest import Manifest


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_llama_dir"])
def test_fp32_export_passes_parity(fixture: str, request: pytest.FixtureRequest) -> None:
    figures = Manifest.load(request.getfixturevalue(fixture)).parity["model"]
    assert figures["passed"] is True
    assert figures["max_abs_logit_diff"] <= figures["tolerance"] == 1e-3
    assert figures["greedy_matched"] == figures["greedy_steps"] == 32


def test_manifest_describes_the_checkpoint(tiny_qwen3_dir: Path, tiny_qwen3_checkpoint: Path) -> None:
    manifest = Manifest.load(tiny_qwen3_dir)
    config = json.loads((tiny_qwen3_checkpoint / "config.json").read_text())
    tokenizer = json.loads((tiny_qwen3_dir / "tokenizer.json").read_text())
    eos_id = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == EOS_TOKEN)

    assert (manifest.architecture, manifest.vocab_size) == ("qwen3", config["vocab_size"])
    assert (manifest.kv.num_layers, manifest.kv.num_kv_heads, manifest.kv.head_dim) == (2, 2, 32)
    assert manifest.kv.dtype == manifest.dtype == "float32"
    assert manifest.max_context_tokens == config["max_position_embeddings"]
    assert manifest.eos_token_ids == (eos_id,)
    assert manifest.step_delimiter == "\n\n" and manifest.think_end == "</think>"
    assert manifest.special_tokens["eos_token"] == EOS_TOKEN
    assert "<|im_start|>assistant\\n<think>\\n" in (manifest.chat_template or "")
    fingerprint = hashlib.sha256((tiny_qwen3_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest.tokenizer_fingerprint == fingerprint
    assert {"optimum", "optimum-onnx", "transformers", "torch", "onnx"} <= set(manifest.export_tools)
    assert manifest.quantization is None and manifest.role == "any"
    for name in ("model.onnx", "tokenizer.json", "tokenizer_config.json", "manifest.json"):
        assert (tiny_qwen3_dir / name).is_file(), name


def test_the_runtime_loads_the_export(tiny_llama_dir: Path) -> None:
    lm = CausalLM.load(tiny_llama_dir, None)
    cache = lm.new_cache()
    logits = lm.prefill(cache, lm.tokenizer.encode("2+2=4\n\n"))
    assert logits.shape == (Manifest.load(tiny_llama_dir).vocab_size,)


def test_qwen2_family_exports(tmp_path: Path) -> None:
    checkpoint = build_random_checkpoint("qwen2", SHAPES["tiny"], tmp_path / "ckpt", seed=1)
    manifest = export_checkpoint(checkpoint, tmp_path / "onnx")
    assert manifest.architecture == "qwen2"
    assert manifest.parity["model"]["passed"] is True


def test_int8_reports_its_cost(tiny_qwen3_checkpoint: Path, tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    options = ExportOptions(quantize_int8=True, graph="optimum")
    manifest = export_checkpoint(tiny_qwen3_checkpoint, tmp_path / "int8", options)
    int8, fp32 = manifest.parity["model"], manifest.parity["float32_export"]
    assert manifest.quantization == "int8-dynamic" and int8["precision"] == "int8"
    assert fp32["passed"] is True
    # The cost is measured and reported, not enforced (no tolerance, so no pass/fail to check):
    # the reported difference is real, as the two models' own logits on the same ids show.
    assert int8["tolerance"] is None
    assert int8["max_abs_logit_diff"] > fp32["max_abs_logit_diff"]
    assert 0 <= int8["greedy_matched"] <= int8["top1_agreed"] <= 32
    ids = list(range(5, 25))
    quantized, full = CausalLM.load(tmp_path / "int8"), CausalLM.load(tiny_qwen3_dir)
    measured = float(np.abs(quantized.prefill(quantized.new_cache(), ids)
                            - full.prefill(full.new_cache(), ids)).max())
    assert measured > 10 * fp32["max_abs_logit_diff"]  # int8 moved the logits, far beyond fp32 noise
    int8_bytes = quantize.onnx_total_bytes(tmp_path / "int8" / "model.onnx")
    assert int8_bytes < quantize.onnx_total_bytes(tiny_qwen3_dir / "model.onnx")


def test_fp16_halves_the_kv_cache(tiny_llama_checkpoint: Path, tmp_path: Path) -> None:
    manifest = export_checkpoint(tiny_llama_checkpoint, tmp_path / "fp16", ExportOptions(dtype="float16"))
    assert manifest.dtype == manifest.kv.dtype == "float16"
    assert manifest.kv.bytes_per_token() == 2 * 2 * 2 * 32 * 2
    figures = manifest.parity["model"]
    assert figures["precision"] == "float16" and figures["passed"] is True
    assert figures["max_abs_logit_diff"] <= figures["tolerance"]


def test_external_data_survives_conversion(
    tiny_llama_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Big models keep weights in a file beside model.onnx; force that path on a tiny one.
    monkeypatch.setattr(quantize, "_EXTERNAL_DATA_THRESHOLD_BYTES", 0)
    out = tmp_path / "int8"
    export_checkpoint(tiny_llama_checkpoint, out, ExportOptions(quantize_int8=True))
    assert (out / "model.onnx.data").is_file() and not list(out.glob("converted*"))
    lm = CausalLM.load(out)
    assert lm.prefill(lm.new_cache(), [5, 6, 7]).shape == (lm.manifest.vocab_size,)
