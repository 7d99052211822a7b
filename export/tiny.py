"""Tiny random models of the real Qwen2 / Qwen3 / Llama architectures, for tests.

No model hub is reachable, so tests make their own checkpoints: the real `transformers` config
and model classes with a few hundred thousand random parameters and a character tokenizer that
carries Qwen-style special tokens and chat template. Export them like any real checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.char_tokenizer import build_char_tokenizer, save_hf_tokenizer
from onnx_lm.errors import BadInputError

# Printable ASCII (space to tilde) plus newline: enough for prompts, steps and the "\n\n" delimiter.
ALPHABET = "".join(chr(code) for code in range(32, 127)) + "\n"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen-like: system/user/assistant turns; the generation prompt opens the thinking block.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyShape:
    """Sizes of a tiny model: small enough to build and export in seconds."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention, as in the real families
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    # Random init with std 0.02 gives near-uniform logits; a wider init makes entropy vary.
    initializer_range: float = 0.2

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise BadInputError(
                f"tiny shape: hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}, "
                f"and num_heads by num_kv_heads {self.num_kv_heads}"
            )


def _config_kwargs(shape: TinyShape, vocab_size: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "max_position_embeddings": shape.max_position_embeddings,
        "initializer_range": shape.initializer_range,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }


def _qwen3_config(kwargs: dict[str, Any]) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(head_dim=kwargs["hidden_size"] // kwargs["num_attention_heads"], **kwargs)


def _qwen2_config(kwargs: dict[str, Any]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**kwargs)


def _llama_config(kwargs: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(**kwargs)


CONFIG_BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "qwen3": _qwen3_config,
    "qwen2": _qwen2_config,
    "llama": _llama_config,
}


def make_tiny_checkpoint(
    family: str, out_dir: Path, *, seed: int = 0, shape: TinyShape | None = None
) -> Path:
    """Write a random Hugging Face checkpoint of `family` ("qwen3", "qwen2", "llama") to `out_dir`.

    The folder holds config.json, generation_config.json, safetensors weights and a character
    tokenizer with Qwen-style special tokens and chat template. Returns `out_dir`.
    Raises BadInputError for an unknown family.
    """
    if family not in CONFIG_BUILDERS:
        raise BadInputError(
            f"unknown tiny model family {family!r}; choose one of {', '.join(sorted(CONFIG_BUILDERS))}"
        )
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    tokenizer = build_char_tokenizer(
        ALPHABET, special_tokens=SPECIAL_TOKENS, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
    eos_id, pad_id = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    kwargs = _config_kwargs(shape or TinyShape(), tokenizer.get_vocab_size(), eos_id, pad_id)
    config = CONFIG_BUILDERS[family](kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(str(out_dir))
    save_hf_tokenizer(
        tokenizer, out_dir, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, chat_template=CHAT_TEMPLATE
    )
    return out_dir
