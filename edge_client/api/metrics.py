"""Edge metrics for `/metrics`, in Prometheus's text format, on a registry of the server's own.

A registry per server (not prometheus_client's global one) so two servers in one process (tests,
a benchmark) keep apart counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge_client.cost import Prices, cloud_tokens, run_cost
from edge_client.trace import WRITERS, RunResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Cloud round trips span a LAN call (ms) to a congested uplink with retries (tens of seconds).
_CALL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ApiMetrics:
    """The counters the server keeps; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter("glimp_steps_total", "reasoning steps, by who wrote them", ["writer"],
                             registry=r)
        self.degraded_steps = Counter("glimp_degraded_steps_total",
                                      "steps the SLM wrote because the cloud was unreachable", registry=r)
        self.degraded_answers = Counter("glimp_degraded_answers_total",
                                        "answers the SLM wrote because the cloud was unreachable", registry=r)
        self.cloud_call = Histogram("glimp_cloud_call_seconds", "round trip of one cloud LLM call",
                                    ["outcome"], buckets=_CALL_BUCKETS_S, registry=r)
        self.link_bytes = Counter("glimp_link_bytes_total", "serialized bytes over the cloud link",
                                  ["direction"], registry=r)
        self.cloud_tokens = Counter("glimp_cloud_tokens_total", "tokens the cloud LLM read or wrote",
                                    ["kind"], registry=r)
        self.cost = Counter("glimp_cloud_cost_total", "money spent at the cloud's prices (0 without prices)",
                            ["currency"], registry=r)
        self.all_cloud_cost = Counter("glimp_all_cloud_cost_total",
                                      "estimated money of the same answers all in the cloud", ["currency"],
                                      registry=r)
        self.conversations = Gauge("glimp_conversations_held",
                                   "conversations whose SLM context is held for their next turn", registry=r)
        self.cloud_conversations = Gauge("glimp_cloud_conversations_open", "LLM conversations open right now",
                                         registry=r)
        self.continued = Counter("glimp_conversations_continued_total",
                                 "turns that continued a held conversation's SLM context", registry=r)
        self.requests = Counter("glimp_requests_total", "chat completions, by outcome", ["outcome"],
                                registry=r)
        self.queued = Gauge("glimp_requests_waiting", "requests waiting for the SLM worker", registry=r)
        self.request_seconds = Histogram("glimp_request_seconds", "wall time of a completion", registry=r)

    def record_run(self, result: RunResult, prompt_tokens: int, prices: Prices | None) -> None:
        """Add a finished run's steps, bytes, tokens and cost."""
        for writer in WRITERS:
            self.steps.labels(writer).inc(sum(step.writer == writer for step in result.steps))
        self.degraded_steps.inc(result.totals.degraded_steps)
        self.degraded_answers.inc(result.answer_writer == "degraded")
        traffic = result.totals.traffic
        self.link_bytes.labels("up").inc(traffic.bytes_up)
        self.link_bytes.labels("down").inc(traffic.bytes_down)
        cloud_in, cloud_out = cloud_tokens(result)
        self.cloud_tokens.labels("input").inc(cloud_in)
        self.cloud_tokens.labels("output").inc(cloud_out)
        if prices is not None:
            cost = run_cost(result, prices, prompt_tokens)
            self.cost.labels(cost.currency).inc(cost.cost)
            self.all_cloud_cost.labels(cost.currency).inc(cost.all_cloud_cost)
        self.request_seconds.observe(result.totals.timing.wall_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
