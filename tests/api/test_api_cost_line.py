"""The CLI summary's cost line: shown with prices (given or from the environment), absent without."""

from __future__ import annotations

import pytest
from api_helpers import QUESTION

from edge_client import EdgeRouter, EntropyThreshold, InProcessLLM, RouterConfig, RunResult, StepSettings
from edge_client.console import render_summary
from edge_client.cost import Prices, cloud_tokens, run_cost
from onnx_lm import CausalLM


@pytest.fixture(scope="module")
def result(pair: tuple[CausalLM, InProcessLLM]) -> RunResult:
    config = RouterConfig(policy=EntropyThreshold(0.2), steps=StepSettings(seed=0))
    return EdgeRouter(pair[0], pair[1], config).answer(QUESTION)


def test_the_cost_line_follows_the_prices(result: RunResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIMP_PRICE_IN_PER_M", raising=False)
    monkeypatch.delenv("GLIMP_PRICE_OUT_PER_M", raising=False)
    assert "cost:" not in render_summary(result)
    cost = run_cost(result, Prices(1.0, 4.0))
    assert f"cost: {cost.cost:.6f} USD" in render_summary(result, Prices(1.0, 4.0))
    monkeypatch.setenv("GLIMP_PRICE_IN_PER_M", "1")
    monkeypatch.setenv("GLIMP_PRICE_OUT_PER_M", "4")
    assert f"all in the cloud {cost.all_cloud_cost:.6f} USD" in render_summary(result)


def test_the_cloud_input_counts_the_answers_prefill(result: RunResult) -> None:
    assert result.answer_writer == "cloud" and result.answer_record.llm_prefill_tokens > 0
    cloud_in, cloud_out = cloud_tokens(result)
    steps_prefill = sum(s.llm_prefill_tokens for s in result.steps)
    assert cloud_in == steps_prefill + result.answer_record.llm_prefill_tokens
    assert cloud_out == result.totals.llm_tokens
    # The all-cloud estimate reads the prompt once (what the SLM fed before its first step).
    assert run_cost(result, Prices(1.0, 0.0)).all_cloud_input_tokens == result.steps[0].slm_prefill_tokens
