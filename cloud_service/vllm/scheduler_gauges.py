"""The latest figures of vLLM's scheduler (running, waiting, KV usage, speculative tokens), for
the metrics page.

vLLM hands its scheduler's stats to every stat logger after each engine step; `SchedulerGauges`
is the state one such logger (`stat_logger()`, given to AsyncLLM) keeps, read when the model
updates its metric families. SchedulerStats is not a stable vLLM interface, so only three plain
fields are read, each with a default.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SchedulerSnapshot:
    running: int = 0  # requests in the running batch
    waiting: int = 0  # requests queued because the batch or the KV space is full
    kv_cache_usage: float = 0.0  # share of KV blocks held by running requests, 0..1
    # Speculative decoding since the start (0 when it is off): tokens proposed, tokens accepted.
    draft_tokens: int = 0
    accepted_tokens: int = 0


class SchedulerGauges:
    """Thread-safe: vLLM records from its output loop, the model reads after each call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest = SchedulerSnapshot()

    def snapshot(self) -> SchedulerSnapshot:
        with self._lock:
            return self._latest

    def record(self, scheduler_stats: Any) -> None:
        spec = getattr(scheduler_stats, "spec_decoding_stats", None)  # this step's, None when off
        with self._lock:
            self._latest = SchedulerSnapshot(
                running=int(getattr(scheduler_stats, "num_running_reqs", 0)),
                waiting=int(getattr(scheduler_stats, "num_waiting_reqs", 0)),
                kv_cache_usage=float(getattr(scheduler_stats, "kv_cache_usage", 0.0)),
                draft_tokens=self._latest.draft_tokens + int(getattr(spec, "num_draft_tokens", 0)),
                accepted_tokens=self._latest.accepted_tokens + int(getattr(spec, "num_accepted_tokens", 0)),
            )

    def stat_logger(self) -> Any:
        """A vLLM StatLoggerBase class (a per-engine factory) that records into these gauges."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        gauges = self

        class GlimpStatLogger(StatLoggerBase):  # type: ignore[misc]
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                if scheduler_stats is not None:
                    gauges.record(scheduler_stats)

            def log_engine_initialized(self) -> None:
                pass

        return GlimpStatLogger
