"""Cloud down and back: the answer is still given, flagged degraded in JSON and stream, or a 503 if asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from api_helpers import MODEL, Served, serve, user

from edge_client import InProcessLLM
from edge_client.api.settings import ApiSettings
from onnx_lm import CausalLM


def split(reply: Any) -> dict[str, Any]:
    return (reply.usage.model_extra or {})["glimp"]


@pytest.fixture()
def cloud(served: Served) -> Iterator[Served]:
    assert served.llm is not None
    yield served
    served.llm.down.clear()


def test_down_the_answer_is_degraded_and_says_so_then_back_it_is_not(cloud: Served) -> None:
    assert cloud.llm is not None
    client = cloud.client()
    cloud.llm.down.set()
    down = client.chat.completions.create(model=MODEL, messages=user(), seed=0)
    assert down.choices[0].message.content  # answered all the same, by the SLM
    assert split(down)["degraded"] is True and split(down)["degraded_steps"] >= 1
    assert split(down)["answer_writer"] == "degraded" and down.system_fingerprint == "glimp-edge-degraded"

    chunks = list(client.chat.completions.create(model=MODEL, messages=user(), seed=0, stream=True))
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    flags = (last.model_extra or {})["glimp"]
    assert flags == {"degraded": True, "degraded_steps": split(down)["degraded_steps"]}
    assert any((c.model_extra or {}).get("glimp", {}).get("writer") == "degraded" for c in chunks)

    cloud.llm.down.clear()
    back = client.chat.completions.create(model=MODEL, messages=user(), seed=0)
    assert split(back)["degraded"] is False and split(back)["steps"]["cloud"] >= 1
    assert back.system_fingerprint == "glimp-edge-cloud"


def test_a_request_that_refuses_a_degraded_answer_gets_503_whole_or_streamed(cloud: Served) -> None:
    assert cloud.llm is not None
    client = cloud.client()
    cloud.llm.down.set()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=user(), seed=0, extra_body={"offline_ok": False})
    assert caught.value.status_code == 503
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "cloud_unavailable"
    with pytest.raises(openai.APIError, match="unavailable"):
        list(client.chat.completions.create(model=MODEL, messages=user(), seed=0, stream=True,
                                            extra_body={"offline_ok": False}))


@pytest.fixture()
def strict(pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    with serve(*pair, settings=ApiSettings(offline_ok=False)) as running:
        yield running


def test_a_server_without_offline_ok_refuses_unless_the_request_accepts(strict: Served) -> None:
    assert strict.llm is not None
    strict.llm.down.set()
    client = strict.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=user(), seed=0)
    assert caught.value.status_code == 503
    accepted = client.chat.completions.create(model=MODEL, messages=user(), seed=0,
                                              extra_body={"offline_ok": True})
    assert split(accepted)["degraded"] is True
