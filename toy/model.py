"""Model shapes of the toy pair and the Llama model built from them.

Plain `LlamaForCausalLM` with tied embeddings: the checkpoint is a normal Hugging Face folder
that `transformers` loads and the export pipeline turns into ONNX.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from toy.task import check_int
from toy.vocab import MODEL_MAX_LENGTH, CharCodec
from onnx_lm.errors import BadInputError

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM


@dataclass(frozen=True)
class ModelSpec:
    """Shape of one toy model."""

    hidden: int  # width of the residual stream
    layers: int  # decoder blocks
    heads: int  # attention heads (as many KV heads: no grouped-query attention at this size)
    ff: int  # width of the SwiGLU feed-forward layer
    max_positions: int = MODEL_MAX_LENGTH  # longest text the model ever sees, prompt + solution

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "ff", "max_positions"):
            check_int(name, getattr(self, name), minimum=1)
        if self.hidden % self.heads:
            raise BadInputError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if (self.hidden // self.heads) % 2:
            raise BadInputError(
                f"hidden / heads = {self.hidden // self.heads} must be even (rotary embeddings rotate pairs)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The shipped pair: ~58k and ~1.2M parameters. The SLM is small on purpose: trained to the end
# of its schedule it lands at ~75 % exact answers and still knows when it is unsure (entropy
# AUROC ~0.8). Stopping a bigger SLM early reaches the same accuracy with a much weaker entropy
# signal (AUROC ~0.7 at 4 layers x 2,000 steps); see models/toy-pair/README.md.
PRESETS: dict[str, ModelSpec] = {
    "slm": ModelSpec(hidden=48, layers=2, heads=4, ff=132),
    "llm": ModelSpec(hidden=128, layers=6, heads=4, ff=352),
}


def build_model(spec: ModelSpec, codec: CharCodec) -> LlamaForCausalLM:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=codec.vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.ff,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,  # the toy texts start with "Q:", no BOS token
        eos_token_id=codec.eos_id,
        pad_token_id=codec.pad_id,
    )
    return LlamaForCausalLM(config)


def parameter_count(model: Any) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())
