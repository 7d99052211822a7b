"""The weights of a local Hugging Face checkpoint, read tensor by tensor from its safetensors files.

The fast graph builder reads one tensor at a time and drops it once written, so an export never
holds the whole model twice. bf16 / fp16 checkpoints are widened to fp32 here: every precision
the builder writes is derived from fp32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glimp_common.errors import BadInputError

_INDEX_FILE = "model.safetensors.index.json"
_SINGLE_FILE = "model.safetensors"


class CheckpointWeights:
    """Named tensors of a checkpoint's safetensors shards (one file or an index of shards)."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self._file_of = _tensor_files(self.checkpoint_dir)

    def parameter_count(self) -> int:
        """Elements of every tensor, from the safetensors headers (no weight is read)."""
        from safetensors import safe_open

        total = 0
        for path in sorted(set(self._file_of.values())):
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (not a dict)
                    total += int(np.prod(handle.get_slice(name).get_shape()))
        return total

    def has(self, name: str) -> bool:
        return name in self._file_of

    def get(self, name: str) -> NDArray[np.float32]:
        """The tensor `name` as a contiguous fp32 array; BadInputError naming it when absent."""
        from safetensors import safe_open

        if name not in self._file_of:
            raise BadInputError(
                f"{self.checkpoint_dir} has no weight {name!r}; the checkpoint does not match its "
                "config.json (or is not a Qwen2/Qwen3/Llama layout): export it with --graph optimum"
            )
        # framework="pt": numpy cannot hold bfloat16, torch can, and widens it exactly.
        with safe_open(str(self._file_of[name]), framework="pt") as handle:
            tensor: Any = handle.get_tensor(name)
        return np.ascontiguousarray(tensor.float().numpy())


def has_safetensors(checkpoint_dir: Path) -> bool:
    """Whether the checkpoint's weights are in safetensors (what the fast graph reads)."""
    return (checkpoint_dir / _INDEX_FILE).is_file() or (checkpoint_dir / _SINGLE_FILE).is_file()


def _tensor_files(checkpoint_dir: Path) -> dict[str, Path]:
    """Which safetensors file holds each tensor."""
    index = checkpoint_dir / _INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: checkpoint_dir / file for name, file in weight_map.items()}
    single = checkpoint_dir / _SINGLE_FILE
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return {name: single for name in handle.keys()}  # noqa: SIM118 (not a dict)
    raise BadInputError(
        f"{checkpoint_dir} has no {_SINGLE_FILE} or {_INDEX_FILE}; the fast graph reads safetensors "
        "weights: re-save the checkpoint with safetensors, or export with --graph optimum"
    )
