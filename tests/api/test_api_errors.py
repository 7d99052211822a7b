"""Bad requests get OpenAI-style error bodies with the right status, as the `openai` client sees them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from api_helpers import MODEL, Served, serve, user

from edge_client import InProcessLLM
from edge_client.api.settings import ApiSettings
from onnx_lm import CausalLM


def error_of(served: Served, **kwargs: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        served.client().chat.completions.create(**{"model": MODEL, "messages": user(), **kwargs})
    return caught.value


def body_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    assert set(body) == {"message", "type", "param", "code"}, body  # the client unwraps "error"
    return body


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"messages": []}, "messages"),
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_bad_input_is_a_400_naming_the_parameter(served: Served, kwargs: dict[str, Any], param: str) -> None:
    exc = error_of(served, **kwargs)
    assert exc.status_code == 400
    body = body_of(exc)
    assert body["type"] == "invalid_request_error" and body["param"] == param


def test_a_prompt_longer_than_the_context_is_a_400(served: Served) -> None:
    exc = error_of(served, messages=user("1+" * 200 + "1"))
    assert exc.status_code == 400 and body_of(exc)["code"] == "context_length_exceeded"
    assert "shorten" in body_of(exc)["message"]


def test_a_body_that_is_not_json_is_a_400(served: Served) -> None:
    request = urllib.request.Request(f"{served.url}/v1/chat/completions", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["code"] == "invalid_json"


def test_an_unknown_model_or_route_is_a_404(served: Served) -> None:
    exc = error_of(served, model="gpt-4o")
    assert isinstance(exc, openai.NotFoundError) and body_of(exc)["code"] == "model_not_found"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{served.url}/v1/nowhere")
    assert caught.value.code == 404 and "error" in json.loads(caught.value.read())


@pytest.fixture(scope="module")
def keyed(pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    with serve(*pair, settings=ApiSettings(api_key="s3cret")) as running:
        yield running


def test_a_missing_or_wrong_key_is_a_401_and_the_right_one_passes(keyed: Served) -> None:
    for key in ("wrong", "s3cret-but-longer"):
        with pytest.raises(openai.AuthenticationError) as caught:
            keyed.client(api_key=key).models.list()
        assert body_of(caught.value)["code"] == "invalid_api_key"
    reply = keyed.client(api_key="s3cret").chat.completions.create(model=MODEL, messages=user(), seed=0)
    assert reply.choices[0].message.content
    with urllib.request.urlopen(f"{keyed.url}/health") as response:  # the probe needs no key
        assert response.status == 200
