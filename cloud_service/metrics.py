"""The ONNX engine's Prometheus metrics, served on Triton's metrics port beside Triton's.

The series it names and how its EngineStats fill them; registering and updating the families is
cloud_service/metric_families.py (shared with the vLLM engine). Tested with the real server.
"""

from __future__ import annotations

from typing import Any

from cloud_service.engines.context_store import EVICTION_REASONS
from cloud_service.engines.onnx import EngineStats
from cloud_service.metric_families import (
    ContextCounts,
    MetricFamilies,
    MetricSpec,
    Series,
    context_series,
    context_specs,
)
from protos import edge_cloud_v1_pb2 as pb

PREFIX = "glimp_"
_KINDS = pb.ContextMismatch.Kind
MISMATCH_KINDS = tuple(_KINDS.Name(k) for k in _KINDS.values() if k != pb.ContextMismatch.KIND_UNSPECIFIED)


SPECS = (
    *context_specs(MISMATCH_KINDS, EVICTION_REASONS),
    MetricSpec("context_cache_bytes", "GAUGE", "Bytes held by the context cache (KV + text)"),
    MetricSpec("prefill_tokens_total", "COUNTER", "Tokens prefilled to catch up with new text"),
    MetricSpec("reused_tokens_total", "COUNTER", "KV-cache tokens reused (longest common prefix)"),
)


def flatten(stats: EngineStats) -> Series:
    """(metric name, label value) -> value, for every series of SPECS."""
    store = stats.store
    counts = ContextCounts(store.hits, store.misses, store.contexts, stats.prefill_tokens,
                           stats.reused_tokens, stats.decode_tokens, stats.mismatches, store.evictions)
    series = context_series(counts, MISMATCH_KINDS, EVICTION_REASONS)
    series[("context_cache_bytes", None)] = store.bytes_held
    return series


class EngineMetrics:
    """The ONNX engine's families, mirrored from its EngineStats."""

    def __init__(self, pb_utils: Any, model_name: str) -> None:
        self._families = MetricFamilies(pb_utils, model_name, PREFIX, SPECS)

    def update(self, stats: EngineStats) -> None:
        self._families.update(flatten(stats))
