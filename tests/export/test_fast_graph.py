"""The fast graph (`glimp export --graph fast`) of tiny random Qwen3, Qwen2 and Llama checkpoints.

Each family's checkpoint has its tied embedding and every 1-D weight randomized (norm gains,
Qwen2's q/k/v biases, Qwen3's q_norm/k_norm), so a graph that dropped or misplaced one of them
could not pass: Hugging Face initializes gains to 1 and biases to 0.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.block_quant import dequantize, quantize_blocks
from export.decoder_spec import decoder_spec
from export.fast_graph import build_fast_graph
from export.hf_export import ExportOptions, export_checkpoint
from export.parity import OrtDecoder, load_reference
from export.shapes import SHAPES, build_random_checkpoint
from glimp_common.errors import BadInputError
from onnx_lm.manifest import Manifest

FAMILIES = ("qwen3", "qwen2", "llama")
TIED = dataclasses.replace(SHAPES["tiny"], tie_word_embeddings=True)
LLAMA3_ROPE = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def randomize_vectors(checkpoint: Path, seed: int = 0) -> None:
    """Give every 1-D weight (norm gains, biases) random values, and save the checkpoint again."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                centre = 1.0 if "norm" in name else 0.0
                param.copy_(centre + 0.3 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(str(checkpoint))


def _checkpoint(family: str, base: Path, rope_scaling: dict[str, object] | None = None) -> Path:
    checkpoint = build_random_checkpoint(family, TIED, base / "checkpoint", seed=3)
    if rope_scaling is not None:
        config_path = checkpoint / "config.json"
        config = json.loads(config_path.read_text())
        config["rope_scaling"] = rope_scaling
        config_path.write_text(json.dumps(config))
    randomize_vectors(checkpoint)
    return checkpoint


@pytest.fixture(scope="module", params=FAMILIES)
def family_exports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A family's tied checkpoint and its fp32 and int4 fast exports."""
    family = request.param
    base = tmp_path_factory.mktemp(f"fast_{family}")
    checkpoint = _checkpoint(family, base)
    fp32, int4 = base / "fp32", base / "int4"
    export_checkpoint(checkpoint, fp32, ExportOptions(graph="fast"))
    export_checkpoint(checkpoint, int4, ExportOptions(graph="fast", quantize_int4=True))
    return {"checkpoint": checkpoint, "fp32": fp32, "int4": int4}


def _graph(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(folder / "model.onnx"), load_external_data=False)


def _ops(folder: Path) -> Counter[str]:
    return Counter(node.op_type for node in _graph(folder).graph.node)


def _consumers(model: onnx.ModelProto, name: str) -> list[str]:
    return [node.op_type for node in model.graph.node if name in node.input]


def test_fp32_fast_graph_matches_transformers(family_exports: dict[str, Path]) -> None:
    manifest = Manifest.load(family_exports["fp32"])
    figures = manifest.parity["model"]
    assert manifest.graph == "fast" and manifest.quantization is None
    assert figures["passed"] is True and figures["precision"] == "float32"
    assert figures["max_abs_logit_diff"] <= figures["tolerance"] == 1e-3
    assert figures["max_abs_logit_diff_decode"] <= 1e-3
    assert figures["greedy_matched"] == figures["greedy_steps"] == 32


def test_fp32_graph_is_grouped_query_attention_with_fused_norms(family_exports: dict[str, Path]) -> None:
    ops = _ops(family_exports["fp32"])
    layers = SHAPES["tiny"].num_layers
    assert ops["GroupQueryAttention"] == layers
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * layers  # after attention and after the MLP
    per_head_norms = 2 * layers if Manifest.load(family_exports["fp32"]).architecture == "qwen3" else 0
    assert ops["SimplifiedLayerNormalization"] == 1 + per_head_norms  # the first input norm
    inputs = {i.name for i in _graph(family_exports["fp32"]).graph.input}
    assert "position_ids" not in inputs and {"input_ids", "attention_mask"} <= inputs
    assert sum(ops.values()) < 20 * layers + 20  # optimum's graph has ~140 nodes a layer


def test_tied_embedding_is_stored_once(family_exports: dict[str, Path]) -> None:
    hidden = TIED.hidden_size
    for kind, gather, head in (("fp32", "Gather", "Gemm"), ("int4", "Reshape", "MatMulNBits")):
        model = _graph(family_exports[kind])
        vocab = Manifest.load(family_exports[kind]).vocab_size
        # Any initializer with a vocabulary axis and at least int4's vocab x hidden / 2 bytes.
        tables = [t for t in model.graph.initializer
                  if vocab in t.dims and int(np.prod(t.dims)) >= vocab * hidden // 2]
        assert len(tables) == 1, (kind, [(t.name, list(t.dims)) for t in tables])
        # The int4 table reaches GatherBlockQuantized through a Reshape to flat rows.
        assert sorted(_consumers(model, tables[0].name)) == sorted([gather, head]), kind


def test_int4_graph_quantizes_projections_embedding_and_head(family_exports: dict[str, Path]) -> None:
    manifest = Manifest.load(family_exports["int4"])
    ops = _ops(family_exports["int4"])
    layers = SHAPES["tiny"].num_layers
    assert manifest.quantization == "int4-block32" and manifest.graph == "fast"
    assert ops["MatMulNBits"] == 4 * layers + 1  # q/k/v fused, o, gate/up fused, down; lm_head
    assert ops["Split"] == 2 * layers  # the fused q/k/v and gate/up outputs
    assert ops["GatherBlockQuantized"] == 1 and ops["MatMul"] == 0
    assert ops["Gather"] == 1  # only the attention mask's width: the embedding is quantized
    assert ops["GroupQueryAttention"] == layers
    figures, fp32 = manifest.parity["model"], manifest.parity["float32_export"]
    assert figures["precision"] == "int4" and figures["tolerance"] is None  # reported, not enforced
    assert fp32["passed"] is True and fp32["greedy_matched"] == 32
    assert 0 <= figures["greedy_matched"] <= figures["top1_agreed"] <= 32
    fp32_bytes = (family_exports["fp32"] / "model.onnx.data").stat().st_size
    assert (family_exports["int4"] / "model.onnx.data").stat().st_size < fp32_bytes / 4


def test_int4_graph_computes_with_exactly_the_block_quantized_weights(
    family_exports: dict[str, Path], tmp_path: Path
) -> None:
    # With fp32 activations (accuracy_level 0) the int4 graph must equal transformers running the
    # dequantized int4 weights: this pins the packing, scales and zero points of every layer.
    import torch

    checkpoint = family_exports["checkpoint"]
    spec = decoder_spec(json.loads((checkpoint / "config.json").read_text()))
    build_fast_graph(checkpoint, tmp_path / "model.onnx", spec, "int4", accuracy_level=0)
    model = load_reference(checkpoint)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2 and param.shape[1] % 32 == 0:
                param.copy_(torch.from_numpy(dequantize(quantize_blocks(param.numpy(), 4))))
    ids = [int(t) for t in np.random.default_rng(1).integers(0, spec.vocab_size, 12)]
    with torch.no_grad():
        expected = model(torch.tensor([ids]), use_cache=False).logits[0].numpy()
    decoder = OrtDecoder(tmp_path / "model.onnx")
    got = np.concatenate([decoder.forward(ids[:7]), decoder.forward(ids[7:10]), decoder.forward(ids[10:11]),
                          decoder.forward(ids[11:])])
    assert np.abs(got - expected).max() < 1e-3


def test_llama3_rope_scaling_is_applied(tmp_path: Path) -> None:
    checkpoint = _checkpoint("llama", tmp_path, rope_scaling=LLAMA3_ROPE)
    manifest = export_checkpoint(checkpoint, tmp_path / "onnx", ExportOptions(graph="fast"))
    figures = manifest.parity["model"]
    assert figures["passed"] is True and figures["greedy_matched"] == 32
    assert figures["max_abs_logit_diff_decode"] <= 1e-3


def test_block_quantization_round_trips_within_half_a_step() -> None:
    weight = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    for bits in (4, 8):
        q = quantize_blocks(weight, bits)
        step = q.scales.repeat(32, axis=1)
        assert np.all(np.abs(dequantize(q) - weight) <= step / 2 + 1e-6), bits


def test_a_checkpoint_without_safetensors_gets_optimums_graph_by_default(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    checkpoint = build_random_checkpoint("qwen3", SHAPES["tiny"], tmp_path / "checkpoint", seed=1)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    model.save_pretrained(str(checkpoint), safe_serialization=False)  # pytorch_model.bin
    (checkpoint / "model.safetensors").unlink()
    manifest = export_checkpoint(checkpoint, tmp_path / "onnx")
    assert manifest.graph == "optimum" and manifest.parity["model"]["passed"] is True
    with pytest.raises(BadInputError, match="only outside safetensors.*--graph optimum"):
        export_checkpoint(checkpoint, tmp_path / "fast", ExportOptions(graph="fast"))
