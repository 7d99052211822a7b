"""The vLLM engine's Prometheus metrics on Triton's metrics port (pb_utils.MetricFamily).

The contract's series share the ONNX engine's names (a dashboard reads either engine the same
way); the context cache holds text only here (the KV half is vLLM's prefix cache), so its bytes
gauge is `context_text_bytes`. The prefix-cache hit rate is
reused_tokens_total / (reused_tokens_total + prefill_tokens_total), both from vLLM's own
num_cached_tokens per request. Waiting requests and KV usage come from vLLM's scheduler
(scheduler_gauges.py).
"""

from __future__ import annotations

from typing import Any

from cloud_service.metric_families import (
    ContextCounts,
    MetricFamilies,
    MetricSpec,
    Series,
    context_series,
    context_specs,
)
from cloud_service.metrics import MISMATCH_KINDS, PREFIX
from cloud_service.vllm.contexts import EVICTION_REASONS
from cloud_service.vllm.engine import EngineStats
from cloud_service.vllm.scheduler_gauges import SchedulerSnapshot

SPECS = (
    *context_specs(MISMATCH_KINDS, EVICTION_REASONS),
    MetricSpec("context_text_bytes", "GAUGE", "Bytes of prompt and committed text held by the contexts"),
    MetricSpec("prefill_tokens_total", "COUNTER", "Prompt tokens vLLM computed (not in its prefix cache)"),
    MetricSpec("reused_tokens_total", "COUNTER", "Prompt tokens vLLM found in its prefix cache"),
    MetricSpec("requests_running", "GAUGE", "Calls being computed by vLLM now"),
    MetricSpec("requests_waiting", "GAUGE",
               "Requests vLLM's scheduler holds waiting (its batch or KV space is full), at its last step"),
    MetricSpec("kv_cache_usage_ratio", "GAUGE",
               "Share of vLLM's KV blocks held by running requests (0-1), at its last step"),
    MetricSpec("spec_draft_tokens_total", "COUNTER", "Tokens speculative decoding proposed"),
    MetricSpec("spec_accepted_tokens_total", "COUNTER",
               "Proposed tokens the model accepted (acceptance rate = accepted / draft)"),
)


def flatten(stats: EngineStats, scheduler: SchedulerSnapshot) -> Series:
    counts = ContextCounts(stats.hits, stats.misses, stats.contexts, stats.prefill_tokens,
                           stats.reused_tokens, stats.decode_tokens, stats.mismatches, stats.evictions)
    series = context_series(counts, MISMATCH_KINDS, EVICTION_REASONS)
    series.update({
        ("context_text_bytes", None): stats.text_bytes,
        ("requests_running", None): stats.running,
        ("requests_waiting", None): scheduler.waiting,
        ("kv_cache_usage_ratio", None): scheduler.kv_cache_usage,
        ("spec_draft_tokens_total", None): scheduler.draft_tokens,
        ("spec_accepted_tokens_total", None): scheduler.accepted_tokens,
    })
    return series


class VllmMetrics:
    """The vLLM engine's families, mirrored from its EngineStats."""

    def __init__(self, pb_utils: Any, model_name: str) -> None:
        self._families = MetricFamilies(pb_utils, model_name, PREFIX, SPECS)

    def update(self, stats: EngineStats, scheduler: SchedulerSnapshot) -> None:
        self._families.update(flatten(stats, scheduler))
