"""One table of model shapes for random checkpoints, and the one builder that writes them.

No model hub is reachable, so tests and benchmarks make their own checkpoints: the real
`transformers` config and model classes of a family, at a shape from `SHAPES`, with random weights
and the character tokenizer of `export.tiny`, or the genuine tokenizer files of a real family
(`TokenizerSource`, fetched by `export.real_tokenizers`). The toy pair takes its model shapes from here too
(its trainer builds the model in memory through `hf_config`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.char_tokenizer import build_char_tokenizer, save_hf_tokenizer
from export.tiny import ALPHABET, CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelShape:
    """Sizes of one decoder-only model."""

    hidden_size: int  # width of the residual stream
    num_layers: int  # decoder blocks
    num_heads: int  # attention heads
    num_kv_heads: int  # KV heads (fewer than num_heads: grouped-query attention)
    intermediate_size: int  # width of the SwiGLU feed-forward layer
    max_position_embeddings: int  # longest text the model ever sees
    vocab_size: int | None = None  # logits rows; None: the tokenizer's size
    tie_word_embeddings: bool = False
    # HF's default 0.02 gives near-uniform logits on random weights; test shapes widen it.
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise BadInputError(
                f"model shape: hidden_size {self.hidden_size} must divide by num_heads {self.num_heads}, "
                f"and num_heads by num_kv_heads {self.num_kv_heads}"
            )


SHAPES: dict[str, ModelShape] = {
    # Small enough to build and export in seconds; the wider init makes entropy vary.
    "tiny": ModelShape(
        hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
        max_position_embeddings=512, initializer_range=0.2,
    ),
    # The decode benchmark's random Qwen3 of about 27M parameters (the measured anchor): the char
    # tokenizer's ~100 ids padded to 4096 logits rows; an init wider than 0.02 so logits are peaked
    # and greedy tokens survive fp16 / CPU-vs-GPU noise.
    "bench-27m": ModelShape(
        hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1536,
        max_position_embeddings=2048, vocab_size=4096, tie_word_embeddings=True, initializer_range=0.1,
    ),
    # The shipped toy pair (Llama, ~58k and ~1.2M parameters), trained by `toy.train`: why these
    # sizes is in toy/model.py and models/toy-pair/README.md. 128 positions: toy.vocab.MODEL_MAX_LENGTH.
    # Checkpoints on the real Qwen3 / Llama 3 tokenizers (151,669 / 128,256 ids): the vocabulary is
    # the whole size, so the rest is as small as a real architecture allows. Untied: the tests
    # script the model through separate input and output embeddings (tests/realtok/scripted.py).
    # One head of 16: ONNX Runtime's GroupQueryAttention (the fast graph) takes head sizes that
    # are multiples of 16 only.
    "realtok": ModelShape(
        hidden_size=16, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=32,
        max_position_embeddings=1024,
    ),
    "toy-slm": ModelShape(
        hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=132,
        max_position_embeddings=128, tie_word_embeddings=True,
    ),
    "toy-llm": ModelShape(
        hidden_size=128, num_layers=6, num_heads=4, num_kv_heads=4, intermediate_size=352,
        max_position_embeddings=128, tie_word_embeddings=True,
    ),
}


def _config_kwargs(shape: ModelShape, vocab_size: int, eos_id: int, pad_id: int) -> dict[str, Any]:
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
        "tie_word_embeddings": shape.tie_word_embeddings,
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


def hf_config(family: str, shape: ModelShape, *, vocab_size: int, eos_id: int, pad_id: int) -> Any:
    """The `transformers` config of `family` ("qwen3", "qwen2", "llama") at `shape`.

    `vocab_size` is the tokenizer's; `shape.vocab_size`, when set, pads the logits to it.
    Raises BadInputError for an unknown family or a shape narrower than the tokenizer.
    """
    if family not in CONFIG_BUILDERS:
        raise BadInputError(
            f"unknown tiny model family {family!r}; choose one of {', '.join(sorted(CONFIG_BUILDERS))}"
        )
    if shape.vocab_size is not None and shape.vocab_size < vocab_size:
        raise BadInputError(f"vocab_size {shape.vocab_size} is below the tokenizer's {vocab_size}")
    rows = vocab_size if shape.vocab_size is None else shape.vocab_size
    return CONFIG_BUILDERS[family](_config_kwargs(shape, rows, eos_id, pad_id))


@dataclass(frozen=True)
class TokenizerSource:
    """A folder of Hugging Face tokenizer files to build a checkpoint on, and its special tokens."""

    folder: Path  # holds tokenizer.json and tokenizer_config.json (with the chat template)
    eos_tokens: tuple[str, ...]  # the first is config.json's eos; generation stops at any
    pad_token: str
    bos_token: str | None = None


def build_random_checkpoint(
    family: str, shape: ModelShape, out_dir: Path, *, seed: int = 0, tokenizer: TokenizerSource | None = None,
) -> Path:
    """Write a random Hugging Face checkpoint of `family` at `shape` to `out_dir`; return `out_dir`.

    The folder holds config.json, generation_config.json, safetensors weights and the tokenizer:
    `tokenizer`'s files when given, else a character tokenizer with Qwen-style special tokens and
    chat template (`export.tiny`).
    Raises BadInputError for an unknown family, a shape narrower than the tokenizer or a
    tokenizer that lacks one of the named special tokens.
    """
    from tokenizers import Tokenizer

    out_dir = Path(out_dir)
    if tokenizer is None:
        char = build_char_tokenizer(
            ALPHABET, special_tokens=SPECIAL_TOKENS, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
        )
        ids, size = _special_ids(char, (EOS_TOKEN,), PAD_TOKEN, None), char.get_vocab_size()
    else:
        real = Tokenizer.from_file(str(tokenizer.folder / "tokenizer.json"))
        ids = _special_ids(real, tokenizer.eos_tokens, tokenizer.pad_token, tokenizer.bos_token)
        size = real.get_vocab_size(with_added_tokens=True)
    eos_ids, pad_id, bos_id = ids
    config = hf_config(family, shape, vocab_size=size, eos_id=eos_ids[0], pad_id=pad_id)
    config.bos_token_id = bos_id
    _save_random_model(config, out_dir, seed, eos_ids, pad_id)
    if tokenizer is None:
        save_hf_tokenizer(
            char, out_dir, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, chat_template=CHAT_TEMPLATE
        )
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(tokenizer.folder / name, out_dir / name)
    return out_dir


def _special_ids(
    tokenizer: Any, eos_tokens: tuple[str, ...], pad_token: str, bos_token: str | None,
) -> tuple[list[int], int, int | None]:
    """(eos ids, pad id, bos id) of the named tokens; BadInputError naming one the tokenizer lacks."""

    def id_of(token: str) -> int:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise BadInputError(f"the tokenizer has no token {token!r}; name one of its special tokens")
        return int(token_id)

    return [id_of(t) for t in eos_tokens], id_of(pad_token), (id_of(bos_token) if bos_token else None)


def _save_random_model(config: Any, out_dir: Path, seed: int, eos_ids: list[int], pad_id: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    eos: int | list[int] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad_id, bos_token_id=config.bos_token_id
    )
    model.save_pretrained(str(out_dir))
    log.info("wrote %s (%.1fM parameters)", out_dir, model.num_parameters() / 1e6)
