"""Multi-turn through the endpoint on a real tritonserver: the cloud context is continued, not re-created.

The tiny Qwen3 is both the SLM and the cloud LLM: its chat template renders the earlier turns (and
drops their reasoning), so the cloud's KV can be kept. The same greedy conversation is played with
conversations held and with none held; only the cost may differ, never the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import CPU, MODEL, serve

from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client import EntropyThreshold, RouterConfig, StepSettings
from edge_client.link import CloudLinkConfig, ResilienceConfig, ResilientLLM
from onnx_lm import CausalLM

pytestmark = [pytest.mark.triton, pytest.mark.slow]

GREEDY = RouterConfig(policy=EntropyThreshold(1.0), steps=StepSettings(
    temperature=0.0, max_step_tokens=8, budget_tokens=24, answer_max_tokens=6))
SYSTEM = {"role": "system", "content": "You are a careful assistant. Work step by step and keep every "
                                       "intermediate result; give the final answer on its own line."}
QUESTIONS = ("What is 2+2?", "And times three?", "Minus five?")


@pytest.fixture(scope="module")
def cloud(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResilientLLM]:
    token = new_token()
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    repo = tmp_path_factory.mktemp("repo") / "repo"
    with local_server(tiny_qwen3_dir, repo, token=token, settings=settings) as server, \
            ResilientLLM.connect(CloudLinkConfig(server.grpc_url, token=token, timeout_s=30.0),
                                 ResilienceConfig()) as llm:
        yield llm


def ask(served: Any, messages: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
    reply = served.client().chat.completions.create(model=MODEL, messages=messages)
    return reply.choices[0].message.content or "", (reply.usage.model_extra or {})["glimp"]


def play(served: Any, questions: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    messages, turns = [SYSTEM], []
    for question in questions:
        messages.append({"role": "user", "content": question})
        answer, split = ask(served, messages)
        messages.append({"role": "assistant", "content": answer})
        turns.append((answer, split))
    return turns


def test_later_turns_continue_the_cloud_context_sending_only_the_new_message(
    tiny_qwen3_dir: Path, cloud: ResilientLLM,
) -> None:
    slm = CausalLM.load(tiny_qwen3_dir, CPU)
    with serve(slm, cloud, config=GREEDY) as held:
        reused = play(held, QUESTIONS)
    with serve(slm, cloud, config=GREEDY, max_conversations=0) as nothing_held:
        anew = play(nothing_held, QUESTIONS)
    assert [answer for answer, _ in reused] == [answer for answer, _ in anew]
    assert reused[0][1]["bytes"] == anew[0][1]["bytes"]  # turn 1: nothing to reuse yet
    for (_, r), (_, n) in zip(reused[1:], anew[1:], strict=True):
        assert r["conversation"]["continued"] and not n["conversation"]["continued"]
        assert r["bytes"]["resync_up"] == 0  # the continued context was never resent
        # Only the new message went up, not the history ...
        assert r["bytes"]["up"] < n["bytes"]["up"]
        # ... and the cloud kept its KV where the template renders the earlier turns alike.
        assert r["cloud_tokens"]["input"] < n["cloud_tokens"]["input"]


def test_an_edited_history_starts_the_cloud_context_over(tiny_qwen3_dir: Path, cloud: ResilientLLM) -> None:
    slm = CausalLM.load(tiny_qwen3_dir, CPU)
    first = [SYSTEM, {"role": "user", "content": QUESTIONS[0]}]
    with serve(slm, cloud, config=GREEDY) as held:
        answer, _ = ask(held, first)
        edited = [SYSTEM, {"role": "user", "content": "What is 2+3?"},
                  {"role": "assistant", "content": answer}, {"role": "user", "content": QUESTIONS[1]}]
        _, after_edit = ask(held, edited)
    with serve(slm, cloud, config=GREEDY, max_conversations=0) as nothing_held:
        _, fresh = ask(nothing_held, edited)
    assert not after_edit["conversation"]["continued"]
    # A new context from the whole edited history: the same upload and prefill as with nothing held.
    assert after_edit["bytes"]["up"] == fresh["bytes"]["up"]
    assert after_edit["cloud_tokens"]["input"] == fresh["cloud_tokens"]["input"]
