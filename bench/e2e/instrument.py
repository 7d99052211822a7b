"""`CloseTimer`: an LLM backend wrapper that times each conversation's close.

The loop closes its cloud context before it returns, and that close is one blocking round trip
the trace does not itemise. Wrapping the backend lets the benchmark show it as its own part of
the latency split instead of leaving it in "other". Every other protocol method passes straight
through (`push` for background sync included), so the loop behaves exactly as with the bare backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from edge_client.llm_backend import LLMBackend, LLMConversation, LLMReply, LLMRequest
from onnx_lm import ChatMessage


class CloseTimer:
    """Wraps an `LLMBackend`; `take_close_s()` returns (and resets) the seconds spent closing."""

    def __init__(self, llm: LLMBackend) -> None:
        self.llm = llm
        self.name = llm.name
        self._close_s = 0.0

    @property
    def provider(self) -> str:
        return self.llm.provider

    def open(self, messages: Sequence[ChatMessage]) -> TimedConversation:
        return TimedConversation(self.llm.open(messages), self)

    def close(self) -> None:
        self.llm.close()

    def take_close_s(self) -> float:
        spent, self._close_s = self._close_s, 0.0
        return spent

    def add_close_s(self, seconds: float) -> None:
        self._close_s += seconds


class TimedConversation:
    """A conversation whose `close` adds its seconds to the owner's count."""

    def __init__(self, inner: LLMConversation, owner: CloseTimer) -> None:
        self._inner = inner
        self._owner = owner

    def call(self, request: LLMRequest) -> LLMReply:
        return self._inner.call(request)

    def push(self, transcript: str) -> None:
        self._inner.push(transcript)

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        self._inner.next_turn(answer, messages)

    def close(self) -> None:
        started = time.perf_counter()
        try:
            self._inner.close()
        finally:
            self._owner.add_close_s(time.perf_counter() - started)
