"""Plain and streamed completions through the real `openai` client against the real server."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from api_helpers import MODEL, Served, user
from openai import OpenAI


def streamed(client: OpenAI, **kwargs: Any) -> tuple[str, str, list[Any]]:
    """(reasoning, content, chunks) of one streamed completion."""
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, **kwargs))
    reasoning = content = ""
    for chunk in chunks:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    return reasoning, content, chunks


def test_a_completion_returns_reasoning_answer_and_the_split(served: Served) -> None:
    reply = served.client().chat.completions.create(model=MODEL, messages=user(), seed=0)
    message = reply.choices[0].message
    reasoning = (message.model_extra or {})["reasoning_content"]
    assert message.content and reasoning and "A:" not in reasoning  # the marker is not reasoning
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 0
    split = (usage.model_extra or {})["glimp"]
    assert sum(split["steps"].values()) == len(split["step_writers"]) == len(split["entropy_nats"])
    assert split["steps"]["cloud"] >= 1 and split["steps"]["edge"] >= 1  # tau 0.2 splits the toy's steps
    assert split["cloud_tokens"]["output"] >= 1 and split["degraded"] is False
    details = usage.completion_tokens_details
    assert details is not None
    assert usage.completion_tokens == details.reasoning_tokens + split["answer_tokens"]
    assert split["cost"] is None  # no prices given to this server


def test_the_stream_carries_the_same_text_as_the_whole_reply(served: Served) -> None:
    client = served.client()
    whole = client.chat.completions.create(model=MODEL, messages=user(), seed=5)
    reasoning, content, chunks = streamed(client, messages=user(), seed=5,
                                          stream_options={"include_usage": True})
    assert reasoning == (whole.choices[0].message.model_extra or {})["reasoning_content"]
    assert content == whole.choices[0].message.content
    # Text arrived piece by piece, each piece marked by who wrote it.
    writers = {(c.model_extra or {}).get("glimp", {}).get("writer") for c in chunks if c.choices}
    assert {"edge", "cloud"} <= writers
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 1
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and (finish[0].model_extra or {})["glimp"]["degraded"] is False
    usage = chunks[-1].usage
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_a_stop_string_ends_the_answer_in_both_forms(served: Served) -> None:
    client = served.client()
    whole = client.chat.completions.create(model=MODEL, messages=user(), seed=5)
    answer = whole.choices[0].message.content or ""
    assert len(answer) >= 2
    stop = answer[1:]  # everything after the answer's first character
    cut = client.chat.completions.create(model=MODEL, messages=user(), seed=5, stop=[stop])
    assert cut.choices[0].message.content == answer[:1] and cut.choices[0].finish_reason == "stop"
    _, content, _ = streamed(client, messages=user(), seed=5, stop=stop)
    assert content == answer[:1]


def test_models_health_and_max_tokens(served: Served) -> None:
    client = served.client()
    assert [m.id for m in client.models.list()] == [MODEL]
    with urllib.request.urlopen(f"{served.url}/health") as response:
        assert json.loads(response.read())["status"] == "ok"
    short = client.chat.completions.create(model=MODEL, messages=user(), seed=5, max_tokens=1)
    assert short.choices[0].finish_reason == "length"
    assert len(short.choices[0].message.content or "") == 1  # the toy writes one character per token
