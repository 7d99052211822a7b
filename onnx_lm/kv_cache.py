"""The KV cache of one sequence, held as ONNX Runtime values on the session's device.

Each layer has a key and a value tensor, both [batch=1, kv_heads, seq, head_dim]. Keeping them
as `OrtValue`s bound straight back into the next call means no copy through numpy between steps,
and on CUDA the cache never leaves the GPU.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from onnx_lm.manifest import KVLayout

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


class KVCache:
    """Past keys/values for one sequence; `length` tokens are held."""

    def __init__(self, layout: KVLayout, device: str = "cpu", device_id: int = 0) -> None:
        self.layout = layout
        self.device = device
        self.device_id = device_id
        # keys[i], values[i]: OrtValue [1, kv_heads, length, head_dim]
        self.keys: list[ort.OrtValue] = []
        self.values: list[ort.OrtValue] = []
        self.length = 0
        self.reset()

    def reset(self) -> None:
        """Drop everything: back to an empty cache."""
        empty = self._empty()
        self.keys = [self._to_device(empty) for _ in range(self.layout.num_layers)]
        self.values = [self._to_device(empty) for _ in range(self.layout.num_layers)]
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes the cache holds on its device."""
        return self.length * self.layout.bytes_per_token()

    def replace(self, keys: list[ort.OrtValue], values: list[ort.OrtValue], length: int) -> None:
        """Take the `present` outputs of a forward call as the new cache."""
        self.keys, self.values, self.length = keys, values, length

    def truncate(self, length: int) -> None:
        """Keep only the first `length` tokens (for longest-common-prefix reuse)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        if length == self.length:
            return
        if length == 0:
            self.reset()
            return
        # Rare (a re-tokenized boundary): one round trip through host memory is acceptable.
        self.keys = [self._to_device(k.numpy()[:, :, :length, :]) for k in self.keys]
        self.values = [self._to_device(v.numpy()[:, :, :length, :]) for v in self.values]
        self.length = length

    def _empty(self) -> np.ndarray:
        shape = (1, self.layout.num_kv_heads, 0, self.layout.head_dim)
        return np.zeros(shape, dtype=_NUMPY_DTYPES[self.layout.dtype])

    def _to_device(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, self.device_id)
