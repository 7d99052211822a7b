"""An engine's own Prometheus families on Triton's metrics port, through the stub's MetricFamily.

`pb_utils` exists only inside the python-backend stub, so it is passed in. Each engine names its
series (`MetricSpec`) and turns its counters into {(name, label value): value}; counters stay
monotonic by adding the change since the last update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Series = dict[tuple[str, "str | None"], float]  # (metric name, label value or None) -> value


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "COUNTER" | "GAUGE"
    help: str
    label: str | None = None  # one label name, or none
    values: tuple[str, ...] = ()  # the label's values


class MetricFamilies:
    """Registers the metric families with Triton and mirrors an engine's counters into them."""

    def __init__(self, pb_utils: Any, model_name: str, prefix: str, specs: Sequence[MetricSpec]) -> None:
        # The families must stay referenced, or Triton drops them.
        self._families = {}
        self._metrics: dict[tuple[str, str | None], Any] = {}
        for spec in specs:
            kind = getattr(pb_utils.MetricFamily, spec.kind)
            family = pb_utils.MetricFamily(name=prefix + spec.name, description=spec.help, kind=kind)
            self._families[spec.name] = family
            for value in spec.values or (None,):
                labels = {"model": model_name}
                if spec.label is not None and value is not None:
                    labels[spec.label] = value
                self._metrics[(spec.name, value)] = family.Metric(labels=labels)
        self._kinds = {spec.name: spec.kind for spec in specs}
        self._last: dict[tuple[str, str | None], float] = {}

    def update(self, series_values: Series) -> None:
        """Set the gauges; add to each counter what it gained since the last update."""
        for series, value in series_values.items():
            metric = self._metrics[series]
            if self._kinds[series[0]] == "GAUGE":
                metric.set(float(value))
                continue
            delta = value - self._last.get(series, 0.0)
            if delta > 0:
                metric.increment(float(delta))
            self._last[series] = value


@dataclass(frozen=True)
class ContextCounts:
    """What both engines count about their contexts and tokens: the series they share by name."""

    hits: int
    misses: int
    contexts: int
    prefill_tokens: int
    reused_tokens: int
    decode_tokens: int
    mismatches: Mapping[str, int]  # mismatch kind -> calls
    evictions: Mapping[str, int]  # eviction reason -> contexts


def context_specs(mismatch_kinds: Sequence[str], eviction_reasons: Sequence[str]) -> tuple[MetricSpec, ...]:
    """The families of the series both engines fill alike (`context_series`), with their help."""
    return (
        MetricSpec("context_cache_hits_total", "COUNTER", "Calls that found their context (any state)"),
        MetricSpec("context_cache_misses_total", "COUNTER",
                   "Calls whose context was unknown (never made, evicted, expired or another credential's)"),
        MetricSpec("context_mismatches_total", "COUNTER", "Calls answered with a context mismatch", "kind",
                   tuple(mismatch_kinds)),
        MetricSpec("context_cache_evictions_total", "COUNTER", "Contexts dropped from the cache", "reason",
                   tuple(eviction_reasons)),
        MetricSpec("context_cache_contexts", "GAUGE", "Contexts held"),
        MetricSpec("decode_tokens_total", "COUNTER", "Tokens generated"),
    )


def context_series(counts: ContextCounts, mismatch_kinds: Sequence[str],
                   eviction_reasons: Sequence[str]) -> Series:
    """The shared series of `counts`, every label value present (0 when it never happened)."""
    series: Series = {
        ("context_cache_hits_total", None): counts.hits,
        ("context_cache_misses_total", None): counts.misses,
        ("context_cache_contexts", None): counts.contexts,
        ("prefill_tokens_total", None): counts.prefill_tokens,
        ("reused_tokens_total", None): counts.reused_tokens,
        ("decode_tokens_total", None): counts.decode_tokens,
    }
    for kind in mismatch_kinds:
        series[("context_mismatches_total", kind)] = counts.mismatches.get(kind, 0)
    for reason in eviction_reasons:
        series[("context_cache_evictions_total", reason)] = counts.evictions.get(reason, 0)
    return series
