"""Multi-turn: a history that extends a held conversation continues the SLM's KV; an edited one starts over.

A tiny random Qwen3 as the SLM: its chat template renders the earlier turns (and drops their
reasoning), so a second turn's prompt shares a long token prefix with the first turn's context.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import CPU, MODEL, Served, serve

from edge_client import EntropyThreshold, InProcessLLM, RouterConfig, StepSettings
from onnx_lm import CausalLM

GREEDY = RouterConfig(policy=EntropyThreshold(1.0), steps=StepSettings(
    temperature=0.0, max_step_tokens=8, budget_tokens=24, answer_max_tokens=6))


@pytest.fixture(scope="module")
def qwen_pair(tiny_qwen3_dir: Path, tiny_llama_dir: Path) -> tuple[CausalLM, InProcessLLM]:
    return CausalLM.load(tiny_qwen3_dir, CPU), InProcessLLM.load(tiny_llama_dir, CPU)


@pytest.fixture()
def held(qwen_pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    with serve(*qwen_pair, config=GREEDY) as running:
        yield running


def ask(served: Served, messages: list[dict[str, str]]) -> tuple[Any, dict[str, Any]]:
    reply = served.client().chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    return reply, (reply.usage.model_extra or {})["glimp"]


def turns(first: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": first}, {"role": "assistant", "content": answer},
            {"role": "user", "content": "and then?"}]


def test_the_second_turn_continues_the_slm_context_and_answers_as_a_fresh_start_would(
    held: Served, qwen_pair: tuple[CausalLM, InProcessLLM],
) -> None:
    reply1, split1 = ask(held, [{"role": "user", "content": "What is 2+2?"}])
    assert split1["conversation"] == {"continued": False, "slm_reused_tokens": 0}
    second = turns("What is 2+2?", reply1.choices[0].message.content or "")
    reply2, split2 = ask(held, second)
    assert split2["conversation"]["continued"] is True
    assert 0 < split2["conversation"]["slm_reused_tokens"] < reply2.usage.prompt_tokens
    with serve(*qwen_pair, config=GREEDY) as fresh:  # the same turn with nothing held
        fresh_reply, fresh_split = ask(fresh, second)
    assert fresh_split["conversation"] == {"continued": False, "slm_reused_tokens": 0}
    assert reply2.choices[0].message.content == fresh_reply.choices[0].message.content
    extra2, extra_fresh = reply2.choices[0].message.model_extra, fresh_reply.choices[0].message.model_extra
    assert (extra2 or {})["reasoning_content"] == (extra_fresh or {})["reasoning_content"]


def test_an_edited_history_starts_over(held: Served) -> None:
    reply1, _ = ask(held, [{"role": "user", "content": "What is 3+3?"}])
    _, split = ask(held, turns("What is 3+4?", reply1.choices[0].message.content or ""))  # turn 1 edited
    assert split["conversation"] == {"continued": False, "slm_reused_tokens": 0}


def test_only_the_most_recent_conversations_are_held(qwen_pair: tuple[CausalLM, InProcessLLM]) -> None:
    with serve(*qwen_pair, config=GREEDY, max_conversations=1) as one:
        first, _ = ask(one, [{"role": "user", "content": "What is 1+1?"}])
        ask(one, [{"role": "user", "content": "What is 5+5?"}])  # pushes the first one out
        assert len(one.engine.conversations) == 1
        _, split = ask(one, turns("What is 1+1?", first.choices[0].message.content or ""))
        assert split["conversation"]["continued"] is False
