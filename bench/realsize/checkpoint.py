"""A random Qwen3-0.6B: the real configuration and the real Qwen3 tokenizer, random weights.

No pretrained weights are reachable here, so the run measures what does not depend on them: export
time and memory, decode speed, the bandwidth limit, the cost of sampling. `export.shapes.ModelShape`
derives head_dim from hidden / heads (64); Qwen3-0.6B's is 128, so the config is written here from
the model card's config.json.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Qwen/Qwen3-0.6B config.json (torch_dtype left out: the random weights are float32).
QWEN3_0_6B: dict[str, Any] = {
    "vocab_size": 151_936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40_960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "bos_token_id": 151_643,
    "eos_token_id": 151_645,
    "pad_token_id": 151_643,
}
EOS_IDS = [151_645, 151_643]  # <|im_end|>, <|endoftext|>


def ensure_checkpoint(out_dir: Path, tokenizer_dir: Path, *, seed: int = 0) -> Path:
    """The checkpoint in `out_dir` (built once: about 2.4 GB of safetensors, ~1 minute)."""
    if (out_dir / "model.safetensors").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    torch.manual_seed(seed)
    config = Qwen3Config(**QWEN3_0_6B)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=EOS_IDS, pad_token_id=151_643, bos_token_id=151_643
    )
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tokenizer_dir / name, staging / name)
    staging.rename(out_dir)
    log.info("wrote %s (%.1fM parameters)", out_dir, model.num_parameters() / 1e6)
    return out_dir


def parameter_count(checkpoint: Path) -> int:
    """Parameters from the safetensors header (no weights read)."""
    with (checkpoint / "model.safetensors").open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    total = 0
    for name, value in header.items():
        if name != "__metadata__":
            count = 1
            for dim in value["shape"]:
                count *= dim
            total += count
    return total
