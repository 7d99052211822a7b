"""Bytes of weights a batch-1 decode step reads, counted from the ONNX graph itself.

Every weight matrix is read once per token, except a table only looked up by Gather (an embedding
stored apart from the output layer): one row of it is read. Packed int4 weights (MatMulNBits'
uint8 blocks, their scales and zero points) count as stored. Small initializers count too; they are
noise next to the matrices.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

_GATHERS = {"Gather", "GatherBlockQuantized"}


def bytes_per_token(onnx_path: Path) -> int:
    """Bytes of initializers one decode step reads (the module docstring says how)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    consumers: dict[str, set[str]] = defaultdict(set)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers[name].add(node.op_type if index == 0 else f"{node.op_type}:{index}")
    total = 0
    for tensor in model.graph.initializer:
        size = _tensor_bytes(tensor)
        ops = consumers.get(tensor.name, set())
        if ops and ops <= _GATHERS and tensor.dims:
            size //= max(int(tensor.dims[0]), 1)  # one looked-up row per token
        total += size
    return total


def _tensor_bytes(tensor: object) -> int:
    import onnx

    dims = [int(d) for d in tensor.dims]  # type: ignore[attr-defined]
    count = int(np.prod(dims)) if dims else 1
    data_type = tensor.data_type  # type: ignore[attr-defined]
    if data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (count + 1) // 2
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    return count * itemsize


def stored_bytes(folder: Path) -> int:
    """Bytes of the model folder's ONNX files and external weights on disk."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.name.endswith(".json"))
