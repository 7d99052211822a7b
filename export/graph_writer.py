"""A small ONNX graph writer whose weights go straight to an external data file.

Each weight is appended to `<model>.data` as it is made and dropped, so writing a graph never
holds a second copy of the model in protobuf form (a 0.6B fp32 model would otherwise peak at twice
its 2.4 GB) and never meets protobuf's 2 GiB limit. Small constants (shapes, axes) stay inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
OPSET = 17
# ONNX Runtime 1.31 reads IR versions up to 13; onnx 1.23 would stamp 14 by default.
IR_VERSION = 10
_ALIGN = 64  # bytes: keeps every weight aligned when ORT maps the data file
_INLINE_BELOW_BYTES = 1024


class GraphWriter:
    """Collects nodes and initializers; `save` writes model.onnx beside its data file."""

    def __init__(self, onnx_path: Path) -> None:
        self.onnx_path = Path(onnx_path)
        self.data_name = self.onnx_path.name + ".data"
        self._data = (self.onnx_path.parent / self.data_name).open("wb")
        self.nodes: list[NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._names: set[str] = set()
        self._counter = 0

    def weight(self, name: str, array: NDArray[Any]) -> str:
        """Store `array` as the initializer `name` (external unless tiny); return the name."""
        array = np.ascontiguousarray(array)
        if array.nbytes < _INLINE_BELOW_BYTES:
            tensor = numpy_helper.from_array(array, name)
        else:
            tensor = self._external(name, array)
        self._claim(name)
        self.initializers.append(tensor)
        return name

    def _external(self, name: str, array: NDArray[Any]) -> TensorProto:
        offset = self._data.tell()
        padding = -offset % _ALIGN
        self._data.write(b"\0" * padding)
        offset += padding
        self._data.write(array.tobytes())
        tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.dims.extend(array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.data_name), ("offset", offset), ("length", array.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        return tensor

    def const(self, values: list[int] | NDArray[Any], dtype: type = np.int64) -> str:
        """An inline constant (shapes, axes) under a fresh name."""
        return self.weight(self._fresh("const"), np.asarray(values, dtype=dtype))

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, *, domain: str = "",
             **attributes: Any) -> list[str]:
        """Add one node; `outputs` is a count of fresh names or the names themselves ("" skips one)."""
        names = [self._fresh(op) for _ in range(outputs)] if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op, inputs, names, name=self._fresh(op + "_node"),
                                           domain=domain, **attributes))
        return names

    def one(self, op: str, inputs: list[str], *, domain: str = "", **attributes: Any) -> str:
        """Add a node with a single output; return its name."""
        return self.node(op, inputs, 1, domain=domain, **attributes)[0]

    def names(self, stem: str, count: int) -> list[str]:
        """`count` fresh value names (for a node whose outputs are partly skipped)."""
        return [self._fresh(stem) for _ in range(count)]

    def save(self, inputs: list[ValueInfoProto], outputs: list[ValueInfoProto], name: str) -> ModelProto:
        """Write model.onnx (the data file is already written); return the model proto."""
        self._data.close()
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            ir_version=IR_VERSION,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="glimprouter.export.fast_graph",
        )
        self.onnx_path.write_bytes(model.SerializeToString())
        return model

    def close(self) -> None:
        """Close the data file (after a failure; `save` closes it otherwise)."""
        self._data.close()

    def _fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}_{self._counter}"

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"initializer {name!r} written twice")
        self._names.add(name)
