"""What the fast graph needs to know about a Qwen2 / Qwen3 / Llama checkpoint, read from config.json.

Also the rotary tables: GroupQueryAttention applies rotary itself from cos/sin caches of
[max_positions, head_dim / 2], which are computed here the way transformers computes its inverse
frequencies (default, linear and Llama 3 scaling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glimp_common.errors import BadInputError

_GRAPH_OPTIMUM_HINT = "export it with --graph optimum"


@dataclass(frozen=True)
class DecoderSpec:
    """The shape and the few numerics of one decoder-only checkpoint."""

    architecture: str  # "qwen2" | "qwen3" | "llama"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_positions: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    tie_word_embeddings: bool

    @property
    def qk_norm(self) -> bool:
        """Qwen3 normalizes each head's query and key (RMSNorm over head_dim) before rotary."""
        return self.architecture == "qwen3"


def decoder_spec(config: dict[str, Any]) -> DecoderSpec:
    """The spec of a checkpoint's config.json; BadInputError for what the fast graph cannot express."""
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise BadInputError(
            f"hidden_act {act!r} is not supported by the fast graph (only silu); {_GRAPH_OPTIMUM_HINT}"
        )
    if config.get("use_sliding_window"):
        raise BadInputError(
            f"sliding-window attention is not supported by the fast graph; {_GRAPH_OPTIMUM_HINT}"
        )
    spec = DecoderSpec(
        architecture=str(config["model_type"]),
        vocab_size=int(config["vocab_size"]),
        hidden_size=hidden,
        num_layers=int(config["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=int(config["intermediate_size"]),
        max_positions=int(config["max_position_embeddings"]),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        rope_scaling=config.get("rope_scaling"),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    if spec.head_dim % 16:
        # ONNX Runtime's GroupQueryAttention refuses other head sizes on CPU (rotary works on 16-wide lanes).
        raise BadInputError(
            f"head_dim {spec.head_dim} is not a multiple of 16, which GroupQueryAttention needs; "
            + _GRAPH_OPTIMUM_HINT
        )
    inverse_frequencies(spec)  # refuses an unknown rope scaling now, before anything is written
    return spec


def inverse_frequencies(spec: DecoderSpec) -> NDArray[np.float64]:
    """Rotary inverse frequencies [head_dim / 2], scaled as the config's rope_scaling says."""
    exponents = np.arange(0, spec.head_dim, 2, dtype=np.int64).astype(np.float64) / spec.head_dim
    inv_freq: NDArray[np.float64] = 1.0 / (spec.rope_theta**exponents)
    scaling = spec.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        return _llama3_scaled(inv_freq, scaling)
    raise BadInputError(
        f"rope scaling {kind!r} is not supported by the fast graph (default, linear, llama3); "
        + _GRAPH_OPTIMUM_HINT
    )


def _llama3_scaled(inv_freq: NDArray[np.float64], scaling: dict[str, Any]) -> NDArray[np.float64]:
    """transformers' `_compute_llama3_parameters`: long wavelengths slowed by `factor`, short kept,
    the band between interpolated smoothly."""
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled)


def rotary_caches(spec: DecoderSpec) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """cos and sin caches [max_positions, head_dim / 2] for GroupQueryAttention's do_rotary.

    Computed as transformers does (fp32 frequencies times fp32 positions), so fp32 logits agree
    to the last bits, not only within tolerance.
    """
    inv_freq = inverse_frequencies(spec).astype(np.float32)
    positions = np.arange(spec.max_positions, dtype=np.float32)
    angles = np.outer(positions, inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
