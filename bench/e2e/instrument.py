"""`CloseTimer`: an LLM backend wrapper that times each conversation's close.

The loop closes its cloud context before it returns, and that close is one blocking round trip
the trace does not itemise. Wrapping the backend lets the benchmark show it as its own part of
the latency split instead of leaving it in "other". Everything else passes straight through
(`push` for background sync included), so the loop behaves exactly as with the bare backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from edge_client.llm_backend import LLMConversation, LLMReply, LLMRequest
from onnx_lm import ChatMessage


class CloseTimer:
    """Wraps an `LLMBackend`; `take_close_s()` returns (and resets) the seconds spent closing."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.name = llm.name
        self._close_s = 0.0

    def open(self, messages: Sequence[ChatMessage]) -> _TimedConversation:
        return _TimedConversation(self.llm.open(messages), self)

    def take_close_s(self) -> float:
        spent, self._close_s = self._close_s, 0.0
        return spent

    def add_close_s(self, seconds: float) -> None:
        self._close_s += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)


class _TimedConversation:
    def __init__(self, inner: LLMConversation, owner: CloseTimer) -> None:
        self._inner = inner
        self._owner = owner

    def call(self, request: LLMRequest) -> LLMReply:
        return self._inner.call(request)

    def close(self) -> None:
        started = time.perf_counter()
        try:
            self._inner.close()
        finally:
            self._owner.add_close_s(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
