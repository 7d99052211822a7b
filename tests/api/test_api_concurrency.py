"""Several clients at once are served one run at a time; a client that leaves cancels its run."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_helpers import MODEL, Served, serve, user

from edge_client import AlwaysCloud, InProcessLLM, RouterConfig, StepSettings
from edge_client.api.settings import ApiSettings
from onnx_lm import CausalLM

QUESTIONS = ["12+7*3-5", "3*4+1", "9-2*2", "5+5+5", "8*2-3", "7+1*4", "6*6-6", "2+3*4"]


def cloud_calls(served: Served) -> float:
    histogram = served.engine.metrics.cloud_call
    return sum(sample.value for metric in histogram.collect() for sample in metric.samples
               if sample.name.endswith("_count"))


def test_eight_clients_at_once_get_the_answers_each_gets_alone(served: Served) -> None:
    client = served.client()

    def ask(question: str) -> tuple[str | None, str]:
        reply = client.chat.completions.create(model=MODEL, messages=user(question), seed=2)
        message = reply.choices[0].message
        return message.content, (message.model_extra or {})["reasoning_content"]

    alone = [ask(q) for q in QUESTIONS]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, QUESTIONS))
    assert together == alone  # one shared SLM session, yet no run saw another's KV cache or rng
    # The requests did overlap (several waited at once), yet only one run was ever on the SLM.
    assert served.engine.peak_waiting >= 2 and served.engine.peak_running == 1


@pytest.fixture()
def one_credit(pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    # One credit: the run may be at most one event ahead of its client, so it is still running
    # when the client leaves after its first piece of text. Every step by the cloud: each one a call.
    # A stall timeout far beyond the test's wait: only the disconnect can cancel the run.
    config = RouterConfig(policy=AlwaysCloud(), steps=StepSettings(seed=0))
    with serve(*pair, config=config, settings=ApiSettings(stream_credits=1, stall_timeout_s=600)) as running:
        yield running


def test_a_client_that_disconnects_mid_stream_cancels_its_run_and_its_cloud_calls(one_credit: Served) -> None:
    client = one_credit.client()
    client.chat.completions.create(model=MODEL, messages=user(), seed=0)
    full_run_calls = cloud_calls(one_credit)
    assert full_run_calls >= 3  # every step and the answer: a call each

    stream = client.chat.completions.create(model=MODEL, messages=user(), seed=0, stream=True)
    for chunk in stream:
        if chunk.choices and (chunk.choices[0].delta.model_extra or {}).get("reasoning_content"):
            break  # the first piece of reasoning: then the client goes away
    stream.close()
    assert one_credit.engine.wait_cancelled(1, timeout_s=60)
    assert cloud_calls(one_credit) - full_run_calls < full_run_calls  # the later steps' calls were not made
    # The worker is free again: the next client is served.
    assert client.chat.completions.create(model=MODEL, messages=user(), seed=0).choices[0].message.content
