"""Precision conversions of an exported fp32 ONNX graph: fp16 for GPUs, int8 weights for CPUs.

Both start from the fp32 graph optimum wrote, so the fp32 export is always proven first and each
conversion's cost is measured against the same reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# protobuf refuses single files over 2 GiB; above this the weights go to an external data file.
_EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


def onnx_total_bytes(onnx_path: Path) -> int:
    """Size of the graph file plus any external data files beside it."""
    folder = Path(onnx_path).parent
    stem = Path(onnx_path).name
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name.startswith(stem))


def _needs_external_data(onnx_path: Path, shrink: float) -> bool:
    return onnx_total_bytes(onnx_path) * shrink > _EXTERNAL_DATA_THRESHOLD_BYTES


def remove_onnx(onnx_path: Path) -> None:
    """Delete an ONNX file and the external data files that belong to it."""
    for path in Path(onnx_path).parent.glob(Path(onnx_path).name + "*"):
        path.unlink()


def convert_fp16(src: Path, dst: Path) -> Path:
    """Write an fp16 copy of the fp32 graph `src` to `dst`, KV cache inputs/outputs included.

    keep_io_types=False makes the past/present tensors fp16 too, halving the KV cache; the
    converter keeps numerically touchy ops (its default block list) in fp32 with casts around them.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    model16 = convert_float_to_float16(model, keep_io_types=False)
    external = _needs_external_data(src, 0.5)
    onnx.save_model(model16, str(dst), save_as_external_data=external, location=Path(dst).name + "_data")
    logger.info("converted %s to fp16 at %s (external data: %s)", src, dst, external)
    return Path(dst)


def quantize_int8(src: Path, dst: Path) -> Path:
    """Write a copy of `src` whose MatMul weights are dynamically quantized to int8 (QInt8).

    Activations are quantized on the fly per call; embeddings and norms stay fp32. Meant for
    CPU devices: about 4x fewer weight bytes read per token, at a measured accuracy cost.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        use_external_data_format=_needs_external_data(src, 0.25),
    )
    logger.info("quantized %s to int8 weights at %s", src, dst)
    return Path(dst)
