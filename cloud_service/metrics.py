"""The model's own Prometheus metrics, served on Triton's metrics port beside Triton's.

`pb_utils` exists only inside the python-backend stub, so it is passed in: this module imports
without Triton and is tested with the real server. Counters are kept monotonic by adding the
change since the last snapshot of the engine's counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud_service.engines.context_store import EVICTION_REASONS
from cloud_service.engines.onnx import EngineStats
from protos import edge_cloud_v1_pb2 as pb

PREFIX = "glimp_"
_KINDS = pb.ContextMismatch.Kind
MISMATCH_KINDS = tuple(_KINDS.Name(k) for k in _KINDS.values() if k != pb.ContextMismatch.KIND_UNSPECIFIED)


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # "COUNTER" | "GAUGE"
    help: str
    label: str | None = None  # one label name, or none
    values: tuple[str, ...] = ()  # the label's values


SPECS = (
    _Spec("context_cache_hits_total", "COUNTER", "Calls that found their context (any state)"),
    _Spec("context_cache_misses_total", "COUNTER", "Calls whose context was unknown (never made, evicted, "
          "expired or another credential's)"),
    _Spec("context_mismatches_total", "COUNTER", "Calls answered with a context mismatch", "kind",
          MISMATCH_KINDS),
    _Spec("context_cache_evictions_total", "COUNTER", "Contexts dropped from the cache", "reason",
          EVICTION_REASONS),
    _Spec("context_cache_bytes", "GAUGE", "Bytes held by the context cache (KV + text)"),
    _Spec("context_cache_contexts", "GAUGE", "Contexts held"),
    _Spec("prefill_tokens_total", "COUNTER", "Tokens prefilled to catch up with new text"),
    _Spec("reused_tokens_total", "COUNTER", "KV-cache tokens reused (longest common prefix)"),
    _Spec("decode_tokens_total", "COUNTER", "Tokens generated"),
)


def flatten(stats: EngineStats) -> dict[tuple[str, str | None], float]:
    """(metric name, label value) -> value, for every series of SPECS."""
    store = stats.store
    series: dict[tuple[str, str | None], float] = {
        ("context_cache_hits_total", None): store.hits,
        ("context_cache_misses_total", None): store.misses,
        ("context_cache_bytes", None): store.bytes_held,
        ("context_cache_contexts", None): store.contexts,
        ("prefill_tokens_total", None): stats.prefill_tokens,
        ("reused_tokens_total", None): stats.reused_tokens,
        ("decode_tokens_total", None): stats.decode_tokens,
    }
    for kind in MISMATCH_KINDS:
        series[("context_mismatches_total", kind)] = stats.mismatches.get(kind, 0)
    for reason in EVICTION_REASONS:
        series[("context_cache_evictions_total", reason)] = store.evictions.get(reason, 0)
    return series


class EngineMetrics:
    """Registers the metric families with Triton and mirrors the engine's counters into them."""

    def __init__(self, pb_utils: Any, model_name: str) -> None:
        # The families must stay referenced, or Triton drops them.
        self._families = {}
        self._metrics: dict[tuple[str, str | None], Any] = {}
        for spec in SPECS:
            kind = getattr(pb_utils.MetricFamily, spec.kind)
            family = pb_utils.MetricFamily(name=PREFIX + spec.name, description=spec.help, kind=kind)
            self._families[spec.name] = family
            for value in spec.values or (None,):
                labels = {"model": model_name}
                if spec.label is not None and value is not None:
                    labels[spec.label] = value
                self._metrics[(spec.name, value)] = family.Metric(labels=labels)
        self._kinds = {spec.name: spec.kind for spec in SPECS}
        self._last: dict[tuple[str, str | None], float] = {}

    def update(self, stats: EngineStats) -> None:
        for series, value in flatten(stats).items():
            metric = self._metrics[series]
            if self._kinds[series[0]] == "GAUGE":
                metric.set(float(value))
                continue
            delta = value - self._last.get(series, 0.0)
            if delta > 0:
                metric.increment(float(delta))
            self._last[series] = value
