"""The recent conversations this device answered, found again when a request's history extends one.

OpenAI's API resends the whole history every turn. When a request's messages begin with a
conversation this device answered (its messages, then the assistant's reply as the client got
it), the turn continues from that conversation's `Continuation` (edge_client.loop): the SLM from
its KV cache (`LMContext.sync` keeps the common token prefix) and the LLM's context with only
the new messages sent (`LLMConversation.next_turn`). An edited history matches nothing and
starts over. Memory is bounded: at most `max_held` conversations, each dropped after `idle_s`
unused (a KV cache can be hundreds of MB); a dropped one closes its cloud context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from edge_client.loop import Continuation
from onnx_lm import ChatMessage


@dataclass
class _Held:
    turn: Continuation
    last_used_s: float  # time.monotonic()


class ConversationCache:
    """At most `max_held` recent conversations (0: none kept, every turn starts over)."""

    def __init__(self, max_held: int, idle_s: float, gauge: Gauge) -> None:
        self.max_held = max_held
        self.idle_s = idle_s
        self.gauge = gauge
        self._held: list[_Held] = []
        self._lock = threading.Lock()

    def take(self, messages: Sequence[ChatMessage]) -> Continuation | None:
        """The longest held conversation that `messages` continue (removed from the cache)."""
        with self._lock:
            dropped = self._drop_idle()
            found = [h for h in self._held if h.turn.continued_by(messages)]
            best = max(found, key=lambda h: len(h.turn.history)) if found else None
            if best is not None:
                self._held.remove(best)
            self.gauge.set(len(self._held))
        _close(dropped)
        return best.turn if best is not None else None

    def put(self, turn: Continuation) -> None:
        """Hold `turn` for its conversation's next turn (the least recently used goes first)."""
        if self.max_held < 1:
            turn.close()
            return
        with self._lock:
            dropped = self._drop_idle()
            self._held.append(_Held(turn, time.monotonic()))
            excess = max(0, len(self._held) - self.max_held)
            dropped += [h.turn for h in self._held[:excess]]
            del self._held[:excess]
            self.gauge.set(len(self._held))
        _close(dropped)

    def clear(self) -> None:
        """Drop every held conversation (the server is stopping)."""
        with self._lock:
            dropped, self._held = [h.turn for h in self._held], []
            self.gauge.set(0)
        _close(dropped)

    def __len__(self) -> int:
        return len(self._held)

    def _drop_idle(self) -> list[Continuation]:
        now = time.monotonic()
        idle = [h.turn for h in self._held if now - h.last_used_s > self.idle_s]
        self._held = [h for h in self._held if now - h.last_used_s <= self.idle_s]
        return idle


def _close(turns: list[Continuation]) -> None:
    # Outside the lock: closing a cloud context is a network call.
    for turn in turns:
        turn.close()
