"""The ONNX causal-LM runtime shared by the edge client and the cloud service.

Bottom layer: imports nothing from the rest of the project. Session and providers
(`CausalLM`), an explicit KV cache, a text-synced context with longest-common-prefix reuse,
exact entropy, sampling, and one decode loop.
"""

from glimp_common.errors import BadInputError, GlimpError, ModelContractError, ProviderError
from onnx_lm.context import LMContext, SyncStats, TailScore
from onnx_lm.generate import Generation, StopCriteria, StopReason, decode_until
from onnx_lm.kv_cache import KVCache
from onnx_lm.manifest import KVLayout, Manifest
from onnx_lm.sampling import (
    GREEDY,
    LLM_STREAM,
    SLM_STREAM,
    SamplingParams,
    entropy_nats,
    make_rng,
    sample_token,
)
from onnx_lm.session import CausalLM, SessionConfig
from onnx_lm.text_codec import ChatMessage, TextCodec

__all__ = [
    "GREEDY", "LLM_STREAM", "SLM_STREAM", "BadInputError", "CausalLM", "ChatMessage", "Generation",
    "GlimpError", "KVCache",
    "KVLayout", "LMContext", "Manifest", "ModelContractError", "ProviderError", "SamplingParams",
    "SessionConfig", "StopCriteria", "StopReason", "SyncStats", "TailScore", "TextCodec", "decode_until",
    "entropy_nats", "make_rng", "sample_token",
]
