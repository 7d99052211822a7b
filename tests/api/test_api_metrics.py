"""`/metrics` in Prometheus's format counts what the completions' usage reported."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from api_helpers import MODEL, Served, serve, user
from prometheus_client.parser import text_string_to_metric_families

from edge_client import InProcessLLM
from edge_client.api.settings import ApiSettings
from edge_client.cost import Prices
from onnx_lm import CausalLM


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{served.url}/metrics") as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture()
def priced(pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    with serve(*pair, settings=ApiSettings(prices=Prices(1.0, 4.0))) as running:
        yield running


def test_metrics_add_up_the_usage_of_each_completion(priced: Served) -> None:
    client = priced.client()
    usages = [(client.chat.completions.create(model=MODEL, messages=user(q), seed=0).usage.model_extra or {})
              ["glimp"] for q in ("12+7*3-5", "3*4+1")]
    metrics = scrape(priced)
    for writer in ("edge", "cloud", "degraded"):
        assert metrics["glimp_steps_total", (("writer", writer),)] == sum(u["steps"][writer] for u in usages)
    assert metrics["glimp_degraded_steps_total", ()] == 0
    assert metrics["glimp_cloud_tokens_total", (("kind", "output"),)] == sum(
        u["cloud_tokens"]["output"] for u in usages)
    assert metrics["glimp_cloud_cost_total", (("currency", "USD"),)] == pytest.approx(
        sum(u["cost"]["cost"] for u in usages))
    calls = metrics["glimp_cloud_call_seconds_count", (("outcome", "ok"),)]
    assert calls == sum(u["cloud_calls"] for u in usages)
    assert metrics["glimp_requests_total", (("outcome", "ok"),)] == 2
    assert metrics["glimp_conversations_held", ()] == 2  # each held for its next turn,
    assert metrics["glimp_cloud_conversations_open", ()] == 2  # with its LLM context still open
    assert ("glimp_link_bytes_total", (("direction", "up"),)) in metrics


def test_the_cost_is_the_prices_times_the_cloud_tokens(priced: Served) -> None:
    reply = priced.client().chat.completions.create(model=MODEL, messages=user(), seed=0)
    glimp = (reply.usage.model_extra or {})["glimp"]
    tokens, cost = glimp["cloud_tokens"], glimp["cost"]
    assert cost["cost"] == pytest.approx((tokens["input"] * 1.0 + tokens["output"] * 4.0) / 1e6)
    # All in the cloud: the prompt read once, every completion token written by the LLM.
    assert cost["all_cloud_input_tokens"] == reply.usage.prompt_tokens
    assert cost["all_cloud_output_tokens"] == reply.usage.completion_tokens
    assert cost["saved"] == pytest.approx(cost["all_cloud_cost"] - cost["cost"])
