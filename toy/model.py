"""Model specs of the toy pair and the Llama model built from them.

Plain `LlamaForCausalLM` with tied embeddings: the checkpoint is a normal Hugging Face folder
that `transformers` loads and the export pipeline turns into ONNX. The shipped sizes are
`export.shapes.SHAPES["toy-slm"]` / `["toy-llm"]`; `ModelSpec` is their form in the trainer's
state file (keep its fields: resuming compares them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from export.shapes import SHAPES, ModelShape, hf_config
from glimp_common.errors import BadInputError
from toy.task import check_int
from toy.vocab import MODEL_MAX_LENGTH, CharCodec

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

    @classmethod
    def from_shape(cls, shape: ModelShape) -> ModelSpec:
        """The spec of a shape of the table; the toy's Llama has no grouped-query attention and ties
        its embeddings. Raises BadInputError for a shape it cannot build."""
        if shape.num_kv_heads != shape.num_heads or not shape.tie_word_embeddings or shape.vocab_size:
            raise BadInputError(
                f"the toy model needs KV heads = heads, tied embeddings and the codec's vocab: {shape}"
            )
        return cls(hidden=shape.hidden_size, layers=shape.num_layers, heads=shape.num_heads,
                   ff=shape.intermediate_size, max_positions=shape.max_position_embeddings)

    def shape(self) -> ModelShape:
        return ModelShape(
            hidden_size=self.hidden, num_layers=self.layers, num_heads=self.heads, num_kv_heads=self.heads,
            intermediate_size=self.ff, max_position_embeddings=self.max_positions, tie_word_embeddings=True,
        )


# The shipped pair: ~58k and ~1.2M parameters. The SLM is small on purpose: trained to the end
# of its schedule it lands at ~75 % exact answers and still knows when it is unsure (entropy
# AUROC ~0.8). Stopping a bigger SLM early reaches the same accuracy with a much weaker entropy
# signal (AUROC ~0.7 at 4 layers x 2,000 steps); see models/toy-pair/README.md.
PRESETS: dict[str, ModelSpec] = {role: ModelSpec.from_shape(SHAPES[f"toy-{role}"]) for role in ("slm", "llm")}


def build_model(spec: ModelSpec, codec: CharCodec) -> LlamaForCausalLM:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    from transformers import LlamaForCausalLM

    # No BOS token (hf_config sets none): the toy texts start with "Q:".
    config = hf_config(
        "llama", spec.shape(), vocab_size=codec.vocab_size, eos_id=codec.eos_id, pad_id=codec.pad_id
    )
    return LlamaForCausalLM(config)


def parameter_count(model: Any) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())
