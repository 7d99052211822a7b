"""`edge_client.Conversation` as an app's Python code drives it: turns that continue what both sides hold.

The toy pair runs in process. The one thing spied on is how many LLM contexts are opened (a real
InProcessLLM underneath): a continued turn must reuse the open one, not open another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_client import Conversation, EdgeRouter, InProcessLLM, RouterConfig, StepSettings
from edge_client.llm_backend import LLMConversation
from edge_client.policies import AlwaysCloud
from glimp_common.errors import BadInputError
from onnx_lm import CausalLM, ChatMessage, SessionConfig

ROOT = Path(__file__).resolve().parents[2]
CPU = SessionConfig(providers="cpu", intra_op_threads=1)
# Every step to the cloud, so each turn talks to the LLM; greedy, so runs repeat.
CONFIG = RouterConfig(policy=AlwaysCloud(), steps=StepSettings(temperature=0.0, seed=0))


class CountingLLM:
    """The real in-process LLM, counting the contexts opened on it."""

    def __init__(self, inner: InProcessLLM) -> None:
        self.inner, self.name, self.opened = inner, inner.name, 0

    @property
    def provider(self) -> str:
        return self.inner.provider

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation:
        self.opened += 1
        return self.inner.open(messages)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def models() -> tuple[CausalLM, InProcessLLM]:
    return (CausalLM.load(ROOT / "models/toy-pair/slm", CPU),
            InProcessLLM.load(ROOT / "models/toy-pair/llm", CPU))


@pytest.fixture()
def llm(models: tuple[CausalLM, InProcessLLM]) -> CountingLLM:
    return CountingLLM(models[1])


@pytest.fixture()
def router(models: tuple[CausalLM, InProcessLLM], llm: CountingLLM) -> EdgeRouter:
    return EdgeRouter(models[0], llm, CONFIG)


def test_a_second_turn_continues_the_cloud_context_and_the_slm_kv(router: EdgeRouter,
                                                                   llm: CountingLLM) -> None:
    with Conversation(router, "be exact") as chat:
        first = chat.ask("12+7*3-5")
        assert chat.continued is False
        second = chat.ask("3*4+1")
        assert chat.continued is True and chat.turns == 2
    assert llm.opened == 1  # turn 2 went on in turn 1's cloud context
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert chat.messages[2].content == first.answer and chat.messages[4].content == second.answer
    # The SLM fed only the new turn's prompt: its KV held turn 1 (a fresh start would feed it all).
    fresh = router.turn(chat.messages[:4])
    fresh.continuation.close()
    assert second.steps[0].slm_prefill_tokens < fresh.result.steps[0].slm_prefill_tokens


def test_reset_starts_a_new_context_and_keeps_the_system_prompt(router: EdgeRouter, llm: CountingLLM) -> None:
    with Conversation(router, "be exact") as chat:
        chat.ask("3*4+1")
        chat.reset()
        assert chat.messages == (ChatMessage("system", "be exact"),)
        chat.ask("9-2*3")
        assert chat.continued is False and chat.turns == 1
    assert llm.opened == 2


def test_a_turn_that_fails_leaves_the_history_and_the_next_starts_over(router: EdgeRouter,
                                                                        llm: CountingLLM) -> None:
    with Conversation(router) as chat:
        chat.ask("3*4+1")
        before = chat.messages
        with pytest.raises(BadInputError, match="context"):
            chat.ask("1+" * 4000 + "1")  # far past the SLM's context
        assert chat.messages == before
        chat.ask("9-2*3")
        assert chat.continued is False  # what the failed turn held was closed, so this one started over
        assert chat.turns == 2
    assert llm.opened == 2
