"""The fast decoder graph of a Qwen2 / Qwen3 / Llama checkpoint, written from its safetensors.

The graph onnxruntime-genai's model builder writes, in the project's own IO names: per layer one
com.microsoft GroupQueryAttention with rotary inside (do_rotary=1 from cos/sin caches), the
norms fused (SimplifiedLayerNormalization, then SkipSimplifiedLayerNormalization which also adds
the residual), SwiGLU as Sigmoid/Mul, and MatMul / MatMulNBits for the projections, q/k/v and
gate/up each one MatMul split after. About 16 nodes a layer instead of optimum's ~140.

IO is optimum's, so the runtime's one loop drives both graphs: `input_ids` [batch, seq],
`attention_mask` [batch, past + seq] (ones), `past_key_values.{i}.key|value` [batch, kv_heads,
past, head_dim] in, `logits` [batch, seq, vocab] and `present.{i}.key|value` out (no shared KV
buffer: the present is past + new, as optimum's is). GroupQueryAttention's own inputs are derived
inside the graph: seqlens_k = sum(attention_mask) - 1, total_sequence_length = its width.

Precisions: float32, float16 (weights, activations and KV), and int8 / int4 weights in
MatMulNBits (block 32, asymmetric, fp32 activations). Quantized exports also store the embedding
block-quantized (GatherBlockQuantized) and the output layer as MatMulNBits; a tied embedding is
stored once in every precision (fp: Gather and a Gemm with transB read the same initializer;
quantized: MatMulNBits and GatherBlockQuantized read the same bytes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from onnx import TensorProto, helper

from export.block_quant import BLOCK_SIZE, quantize_blocks
from export.checkpoint_weights import CheckpointWeights
from export.decoder_spec import DecoderSpec, rotary_caches
from export.graph_writer import MS_DOMAIN, GraphWriter

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "float16", "int8", "int4")
QUANT_BITS = {"int8": 8, "int4": 4}
# MatMulNBits accuracy_level 4: activations quantized to int8 per block inside the kernel, the
# fast path on CPUs (what onnxruntime-genai's builder picks for CPU int4).
ACCURACY_LEVEL = 4
_ONNX_DTYPE: dict[type, int] = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


@dataclass(frozen=True)
class _Plan:
    """How each kind of weight is stored for one precision."""

    float_dtype: type  # activations, norms, unquantized weights, KV cache
    bits: int | None  # MatMulNBits bits for the projections; None: plain MatMul
    accuracy_level: int  # MatMulNBits' compute type of the activations

    @classmethod
    def of(cls, precision: str, accuracy_level: int) -> _Plan:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
        dtype = np.float16 if precision == "float16" else np.float32
        return cls(dtype, QUANT_BITS.get(precision), accuracy_level)

    def quantizes(self, k: int) -> bool:
        """Quantize a weight with K inputs (K must fill whole blocks for the embedding to share it)."""
        return self.bits is not None and k % BLOCK_SIZE == 0


def build_fast_graph(
    checkpoint_dir: Path, onnx_path: Path, spec: DecoderSpec, precision: str, *,
    accuracy_level: int = ACCURACY_LEVEL,
) -> Path:
    """Write the fast graph of `checkpoint_dir` at `precision` to `onnx_path` (+ `.data`).

    `accuracy_level` is MatMulNBits' (0: fp32 activations, exact against the dequantized weights;
    4: int8 activations, the fast CPU path)."""
    plan = _Plan.of(precision, accuracy_level)
    writer = GraphWriter(onnx_path)
    try:
        _Builder(writer, CheckpointWeights(checkpoint_dir), spec, plan).build()
        writer.save(_inputs(spec, plan), _outputs(spec, plan), f"{spec.architecture}-fast-{precision}")
    finally:
        writer.close()
    log.info("wrote the fast %s graph (%d nodes) to %s", precision, len(writer.nodes), onnx_path)
    return Path(onnx_path)


class _Builder:
    """Adds the decoder's nodes to a GraphWriter, layer by layer."""

    def __init__(self, g: GraphWriter, weights: CheckpointWeights, spec: DecoderSpec, plan: _Plan) -> None:
        self.g, self.w, self.spec, self.plan = g, weights, spec, plan

    def build(self) -> None:
        spec, g = self.spec, self.g
        seqlens_k, total = self._attention_lengths()
        cos, sin = rotary_caches(spec)
        cos_name = g.weight("rotary.cos_cache", cos.astype(self.plan.float_dtype))
        sin_name = g.weight("rotary.sin_cache", sin.astype(self.plan.float_dtype))
        tied_lm_head = self._embedding()
        residual = tied_lm_head.embedded
        hidden = self._norm("model.layers.0.input_layernorm.weight", residual)
        for layer in range(spec.num_layers):
            prefix = f"model.layers.{layer}"
            attn = self._attention(prefix, layer, hidden, seqlens_k, total, cos_name, sin_name)
            hidden, residual = self._skip_norm(f"{prefix}.post_attention_layernorm.weight", attn, residual)
            mlp = self._mlp(prefix, hidden)
            next_norm = (f"model.layers.{layer + 1}.input_layernorm.weight"
                         if layer + 1 < spec.num_layers else "model.norm.weight")
            hidden, residual = self._skip_norm(next_norm, mlp, residual)
        tied_lm_head.logits(hidden)

    # -- graph inputs -> GroupQueryAttention's lengths -----------------------------------------

    def _attention_lengths(self) -> tuple[str, str]:
        """seqlens_k [batch] int32 = tokens seen - 1; total_sequence_length scalar int32."""
        g = self.g
        seen = g.one("ReduceSum", ["attention_mask", g.const([1])], keepdims=0)
        last = g.one("Sub", [seen, g.const([1])])
        seqlens_k = g.one("Cast", [last], to=TensorProto.INT32)
        width = g.one("Gather", [g.one("Shape", ["attention_mask"]), g.const(np.asarray(1))], axis=0)
        total = g.one("Cast", [width], to=TensorProto.INT32)
        return seqlens_k, total

    # -- embedding and output layer --------------------------------------------------------------

    def _embedding(self) -> _EmbeddingAndHead:
        return _EmbeddingAndHead(self)

    # -- blocks -------------------------------------------------------------------------------

    def _norm(self, weight_name: str, x: str) -> str:
        gamma = self.g.weight(weight_name, self.w.get(weight_name).astype(self.plan.float_dtype))
        return self.g.one("SimplifiedLayerNormalization", [x, gamma], axis=-1,
                          epsilon=self.spec.rms_norm_eps, stash_type=1)

    def _skip_norm(self, weight_name: str, x: str, residual: str) -> tuple[str, str]:
        """RMSNorm(x + residual) and x + residual, in one fused node."""
        gamma = self.g.weight(weight_name, self.w.get(weight_name).astype(self.plan.float_dtype))
        normed, summed = self.g.names("skip_norm", 2)
        self.g.node("SkipSimplifiedLayerNormalization", [x, residual, gamma], [normed, "", "", summed],
                    domain=MS_DOMAIN, epsilon=self.spec.rms_norm_eps)
        return normed, summed

    def fused_linear(self, x: str, prefixes: Sequence[str], name: str) -> list[str]:
        """The Linears `prefixes` of one input as one MatMul (their [out, in] weights stacked,
        named `name`), split back into their outputs: one weight read and one kernel per step
        instead of several, as onnxruntime-genai's builder writes q/k/v and gate/up. Block
        quantization runs along each row, so stacking rows quantizes each weight as alone."""
        weights = [self.w.get(f"{prefix}.weight") for prefix in prefixes]
        fused = self.linear(x, name, np.concatenate(weights), self._stacked_bias(prefixes, weights))
        sizes = self.g.const([w.shape[0] for w in weights])
        outputs = self.g.names("split", len(weights))
        self.g.node("Split", [fused, sizes], outputs, axis=-1)
        return outputs

    def _stacked_bias(
        self, prefixes: Sequence[str], weights: list[NDArray[np.float32]]
    ) -> NDArray[np.float32] | None:
        """The biases of `prefixes` stacked as their weights are (zeros for one without); None
        when none has a bias."""
        if not any(self.w.has(f"{prefix}.bias") for prefix in prefixes):
            return None
        return np.concatenate([
            self.w.get(f"{prefix}.bias") if self.w.has(f"{prefix}.bias") else np.zeros(w.shape[0], np.float32)
            for prefix, w in zip(prefixes, weights, strict=True)
        ])

    def linear(self, x: str, prefix: str, weight: NDArray[np.float32] | None = None,
               bias: NDArray[np.float32] | None = None) -> str:
        """x @ W.T (+ bias) for the Linear `prefix` ([out, in] weight), read from the checkpoint
        unless `weight` (and then `bias`) are given."""
        if weight is None:
            weight = self.w.get(f"{prefix}.weight")
            bias = self.w.get(f"{prefix}.bias") if self.w.has(f"{prefix}.bias") else None
        w = weight
        n, k = w.shape
        if self.plan.quantizes(k):
            assert self.plan.bits is not None
            q = quantize_blocks(w, self.plan.bits)
            out = self.g.one(
                "MatMulNBits",
                [x, self.g.weight(f"{prefix}.qweight", q.data), self.g.weight(f"{prefix}.scales", q.scales),
                 self.g.weight(f"{prefix}.zero_points", q.zero_points)],
                domain=MS_DOMAIN, K=k, N=n, bits=q.bits, block_size=q.block_size,
                accuracy_level=self.plan.accuracy_level,
            )
        else:
            transposed = self.g.weight(f"{prefix}.weight_t", w.T.astype(self.plan.float_dtype))
            out = self.g.one("MatMul", [x, transposed])
        if bias is not None:
            stored = self.g.weight(f"{prefix}.bias", bias.astype(self.plan.float_dtype))
            out = self.g.one("Add", [out, stored])
        return out

    def _head_norm(self, prefix: str, x: str, heads: int) -> str:
        """Qwen3's per-head RMSNorm of queries or keys: [b, s, heads*d] -> per head -> back."""
        d = self.spec.head_dim
        per_head = self.g.one("Reshape", [x, self.g.const([0, 0, heads, d])])
        normed = self._norm(f"{prefix}.weight", per_head)
        return self.g.one("Reshape", [normed, self.g.const([0, 0, heads * d])])

    def _attention(
        self, prefix: str, layer: int, x: str, seqlens_k: str, total: str, cos: str, sin: str
    ) -> str:
        spec, g = self.spec, self.g
        past = [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"]
        attn = f"{prefix}.self_attn"
        q, k, v = self.fused_linear(x, [f"{attn}.{p}_proj" for p in "qkv"], f"{attn}.qkv_proj")
        if spec.qk_norm:
            q = self._head_norm(f"{attn}.q_norm", q, spec.num_heads)
            k = self._head_norm(f"{attn}.k_norm", k, spec.num_kv_heads)
        context = g.names("attention", 1)[0]
        g.node(
            "GroupQueryAttention",
            [q, k, v, *past, seqlens_k, total, cos, sin],
            [context, f"present.{layer}.key", f"present.{layer}.value"],
            domain=MS_DOMAIN,
            num_heads=spec.num_heads,
            kv_num_heads=spec.num_kv_heads,
            scale=float(spec.head_dim**-0.5),
            do_rotary=1,
            rotary_interleaved=0,  # transformers' rotate_half: first half against second half
        )
        return self.linear(context, f"{attn}.o_proj")

    def _mlp(self, prefix: str, x: str) -> str:
        g = self.g
        gate, up = self.fused_linear(x, [f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"],
                                     f"{prefix}.mlp.gate_up_proj")
        silu = g.one("Mul", [gate, g.one("Sigmoid", [gate])])
        return self.linear(g.one("Mul", [silu, up]), f"{prefix}.mlp.down_proj")


class _EmbeddingAndHead:
    """The token embedding and the output layer, sharing one stored copy when they are tied."""

    EMBED = "model.embed_tokens.weight"
    HEAD = "lm_head"

    def __init__(self, builder: _Builder) -> None:
        self.b = builder
        spec = builder.spec
        # Tied when the config says so, or when the checkpoint has no lm_head of its own.
        self.tied = spec.tie_word_embeddings or not builder.w.has(f"{self.HEAD}.weight")
        table = builder.w.get(self.EMBED)
        self._quantized = builder.plan.quantizes(spec.hidden_size)
        self.embedded = self._gather(table)

    def _gather(self, table: NDArray[np.float32]) -> str:
        g, plan = self.b.g, self.b.plan
        if not self._quantized:
            self._table = g.weight(self.EMBED, table.astype(plan.float_dtype))
            return g.one("Gather", [self._table, "input_ids"], axis=0)
        assert plan.bits is not None
        q = quantize_blocks(table, plan.bits)
        self._table = g.weight(f"{self.EMBED}.qweight", q.data)
        self._scales = g.weight(f"{self.EMBED}.scales", q.scales)
        self._zero_points = g.weight(f"{self.EMBED}.zero_points", q.zero_points)
        self._bits = q.bits
        # GatherBlockQuantized wants the rows flat ([vocab, hidden * bits / 8]): a reshape of
        # MatMulNBits' [vocab, blocks, block bytes], so the bytes are stored once.
        flat = g.one("Reshape", [self._table, g.const([q.n, -1])])
        return g.one("GatherBlockQuantized", [flat, "input_ids", self._scales, self._zero_points],
                     domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=q.block_size, bits=q.bits)

    def logits(self, hidden: str) -> None:
        """Write `logits` [batch, seq, vocab] from the final hidden states."""
        g, spec = self.b.g, self.b.spec
        if not self.tied:
            out = self.b.linear(hidden, self.HEAD)
        elif self._quantized:
            out = g.one(
                "MatMulNBits", [hidden, self._table, self._scales, self._zero_points], domain=MS_DOMAIN,
                K=spec.hidden_size, N=spec.vocab_size, bits=self._bits, block_size=BLOCK_SIZE,
                accuracy_level=self.b.plan.accuracy_level,
            )
        else:
            # Gemm reads the [vocab, hidden] table transposed in place: no second copy.
            rows = g.one("Reshape", [hidden, g.const([-1, spec.hidden_size])])
            flat = g.one("Gemm", [rows, self._table], transB=1)
            shape = g.one("Concat", [g.one("Shape", ["input_ids"]), g.const([spec.vocab_size])], axis=0)
            out = g.one("Reshape", [flat, shape])
        g.node("Identity", [out], ["logits"])


def _kv_info(name: str, spec: DecoderSpec, elem: int, seq: str) -> helper.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, ["batch", spec.num_kv_heads, seq, spec.head_dim])


def _inputs(spec: DecoderSpec, plan: _Plan) -> list[helper.ValueInfoProto]:
    elem = _ONNX_DTYPE[plan.float_dtype]
    infos = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"]),
    ]
    for layer in range(spec.num_layers):
        for kind in ("key", "value"):
            infos.append(_kv_info(f"past_key_values.{layer}.{kind}", spec, elem, "past_sequence"))
    return infos


def _outputs(spec: DecoderSpec, plan: _Plan) -> list[helper.ValueInfoProto]:
    elem = _ONNX_DTYPE[plan.float_dtype]
    logits_elem = elem if plan.bits is None else TensorProto.FLOAT
    infos = [helper.make_tensor_value_info("logits", logits_elem, ["batch", "sequence", spec.vocab_size])]
    for layer in range(spec.num_layers):
        for kind in ("key", "value"):
            infos.append(_kv_info(f"present.{layer}.{kind}", spec, elem, "total_sequence"))
    return infos
