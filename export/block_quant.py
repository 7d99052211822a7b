"""Block-wise weight quantization in the layout of ONNX Runtime's MatMulNBits and GatherBlockQuantized.

A weight [N, K] (N outputs, K inputs: Hugging Face's Linear layout, and the embedding's [vocab,
hidden]) is cut into blocks of `block_size` along K. Each block gets an fp32 scale and an unsigned
zero point (asymmetric, as onnxruntime-genai's builder and ORT's MatMulNBitsQuantizer default to):
q = clip(round(w / scale) + zero_point, 0, 2**bits - 1), w ~ (q - zero_point) * scale.

Layout (checked against ORT's kernels by tests/export):
- MatMulNBits B: uint8 [N, K / block, block * bits / 8]; 4-bit values two per byte, the even
  element in the low nibble. scales [N, K / block]. zero points uint8 [N, ceil(K / block * bits / 8)],
  4-bit ones packed the same way.
- GatherBlockQuantized takes the same bytes as [N, K * bits / 8] (a reshape), the same scales
  and zero points: that is how the tied embedding and lm_head share one stored copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BLOCK_SIZE = 32


@dataclass(frozen=True)
class BlockQuantized:
    """One weight in MatMulNBits' layout."""

    data: NDArray[np.uint8]  # [N, K / block, block * bits / 8]
    scales: NDArray[np.float32]  # [N, K / block]
    zero_points: NDArray[np.uint8]  # [N, ceil(K / block * bits / 8)]
    bits: int
    block_size: int

    @property
    def n(self) -> int:
        return int(self.data.shape[0])

    @property
    def k(self) -> int:
        return int(self.data.shape[1]) * self.block_size


def quantize_blocks(weight: NDArray[np.float32], bits: int, block_size: int = BLOCK_SIZE) -> BlockQuantized:
    """Quantize `weight` [N, K] to `bits` (4 or 8) per element in blocks of `block_size` along K."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    n, k = weight.shape
    if k % block_size:
        raise ValueError(f"K {k} is not a multiple of the block size {block_size}")
    top = (1 << bits) - 1
    blocks = weight.reshape(n, k // block_size, block_size).astype(np.float32)
    low = np.minimum(blocks.min(axis=-1), 0.0)  # the range holds 0, so zero stays exact
    high = np.maximum(blocks.max(axis=-1), 0.0)
    scales = (high - low) / top
    scales[scales == 0] = 1.0  # an all-zero block: any scale reproduces it
    zero_points = np.clip(np.round(-low / scales), 0, top).astype(np.uint8)
    levels = np.round(blocks / scales[..., None]) + zero_points[..., None]
    q = np.clip(levels, 0, top).astype(np.uint8)
    if bits == 4:
        return BlockQuantized(_pack_nibbles(q), scales, _pack_nibbles(zero_points), bits, block_size)
    return BlockQuantized(q, scales, zero_points, bits, block_size)


def dequantize(quantized: BlockQuantized) -> NDArray[np.float32]:
    """The fp32 weight [N, K] a quantized one stands for (what ORT's kernels compute with)."""
    q = quantized.data
    kb = quantized.k // quantized.block_size
    zero_points = quantized.zero_points
    if quantized.bits == 4:
        q = _unpack_nibbles(q)
        zero_points = _unpack_nibbles(zero_points)[:, :kb]
    values = (q.astype(np.float32) - zero_points[..., None]) * quantized.scales[..., None]
    return values.reshape(quantized.n, quantized.k)


def _pack_nibbles(values: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Two 4-bit values per byte along the last axis, the even one in the low nibble (odd: pad 0)."""
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:-1], 1), np.uint8)], axis=-1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(packed: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out = np.empty((*packed.shape[:-1], packed.shape[-1] * 2), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out
