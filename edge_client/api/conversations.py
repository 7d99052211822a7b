"""The SLM contexts of recent conversations, found again when a request's history extends one.

OpenAI's API resends the whole history every turn. When a request's messages begin with a
conversation this device answered (its messages, then the assistant's reply as the client got
it), the SLM continues from that conversation's KV cache: `LMContext.sync` keeps the common
token prefix (the earlier turns as the template renders them) and feeds only what differs.
An edited history matches nothing and starts over. Memory is bounded: at most `max_held`
conversations, each dropped after `idle_s` unused (a KV cache can be hundreds of MB).

Only the SLM's side is continued: the cloud is opened on the whole history each turn (its
context from the last turn is closed when the turn ends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from onnx_lm import ChatMessage, LMContext


@dataclass
class _Held:
    history: tuple[ChatMessage, ...]  # the turn's messages and the assistant's reply
    ctx: LMContext  # the SLM's cache after that turn
    last_used_s: float  # time.monotonic()


class ConversationCache:
    """At most `max_held` recent conversations' SLM contexts (0: none kept, every turn starts over)."""

    def __init__(self, max_held: int, idle_s: float, gauge: Gauge) -> None:
        self.max_held = max_held
        self.idle_s = idle_s
        self.gauge = gauge
        self._held: list[_Held] = []
        self._lock = threading.Lock()

    def take(self, messages: Sequence[ChatMessage]) -> LMContext | None:
        """The context of the longest held conversation that `messages` continue (removed from the cache)."""
        with self._lock:
            self._drop_idle()
            found = [h for h in self._held if _continues(messages, h.history)]
            if not found:
                return None
            best = max(found, key=lambda h: len(h.history))
            self._held.remove(best)
            self.gauge.set(len(self._held))
            return best.ctx

    def put(self, messages: Sequence[ChatMessage], reply: str, ctx: LMContext) -> None:
        """Hold `ctx` as the conversation `messages` + the assistant's `reply` (the oldest goes first)."""
        if self.max_held < 1:
            return
        with self._lock:
            self._drop_idle()
            self._held.append(_Held((*messages, ChatMessage("assistant", reply)), ctx, time.monotonic()))
            del self._held[: max(0, len(self._held) - self.max_held)]
            self.gauge.set(len(self._held))

    def __len__(self) -> int:
        return len(self._held)

    def _drop_idle(self) -> None:
        now = time.monotonic()
        self._held = [h for h in self._held if now - h.last_used_s <= self.idle_s]
        self.gauge.set(len(self._held))


def _continues(messages: Sequence[ChatMessage], history: tuple[ChatMessage, ...]) -> bool:
    """Whether `messages` are `history` followed by at least one more message."""
    return len(messages) > len(history) and tuple(messages[: len(history)]) == history
