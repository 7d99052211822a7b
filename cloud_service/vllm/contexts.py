"""The server's half of a context for the vLLM engine: owner-scoped id, committed text, digest.

With vLLM the KV half of the context cache is vLLM's automatic prefix cache (shared by all
contexts, evicted by vLLM), so a context here holds only text: the rendered prompt, the text
committed after it and the running transcript digest. Nothing here touches vLLM.

Keys are `validation.ContextKey`s, (sha256(client key), context id): another credential's context
is simply unknown. Bounded by a count and by text bytes (least recently used first) and by an idle
TTL. Each key has an asyncio lock: calls on one context run one after the other (the second sees
the first's commit, so a stale base gets a typed mismatch), calls on different contexts run
concurrently and batch inside vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloud_service.validation import ContextKey
from protos.contract import TranscriptDigest, TranscriptView

EVICT_BUDGET = "budget"  # over max_contexts or text_budget_bytes: least recently used first
EVICT_TTL = "ttl"
EVICT_REPLACED = "replaced"  # a create replaced the context under the same key
EVICT_CLOSED = "closed"
EVICTION_REASONS = (EVICT_BUDGET, EVICT_TTL, EVICT_REPLACED, EVICT_CLOSED)


@dataclass(frozen=True)
class TableLimits:
    max_contexts: int = 65536
    text_budget_bytes: int = 256 << 20  # prompt + committed text of every context together
    idle_ttl_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_contexts <= 0 or self.text_budget_bytes <= 0 or not self.idle_ttl_s > 0:
            raise ValueError(f"context table limits must be positive, got {self}")


class TextContext:
    """One conversation as the server holds it: the prompt text, the committed text, the digest."""

    __slots__ = ("digest", "messages", "prompt_text", "text")

    def __init__(self, messages: tuple[tuple[str, str], ...], prompt_text: str) -> None:
        self.messages = messages  # for a next turn (cloud_service.turns)
        self.prompt_text = prompt_text
        self.text = ""  # appended text committed so far
        self.digest = TranscriptDigest(messages)

    @property
    def nbytes(self) -> int:
        return len(self.prompt_text.encode("utf-8")) + self.digest.length_bytes

    def view(self) -> TranscriptView:
        return self.digest.view()

    def commit(self, appended: str) -> None:
        """Append `appended` to the committed text (called only once a call has fully succeeded)."""
        digest = self.digest.copy()
        digest.extend(appended)
        self.text, self.digest = self.text + appended, digest


@dataclass
class _Slot:
    entry: TextContext
    nbytes: int
    last_used_s: float


class ContextTable:
    """ContextKey -> TextContext, LRU-ordered; `now_s` is a monotonic clock reading."""

    def __init__(self, limits: TableLimits | None = None) -> None:
        self.limits = limits or TableLimits()
        self._slots: OrderedDict[ContextKey, _Slot] = OrderedDict()
        self._locks: dict[ContextKey, tuple[asyncio.Lock, int]] = {}  # lock, holders + waiters
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def bytes_held(self) -> int:
        return self._bytes

    @contextlib.asynccontextmanager
    async def hold(self, key: ContextKey) -> AsyncIterator[None]:
        """Serialize calls on one key (the lock is dropped once nobody holds or waits for it)."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def get(self, key: ContextKey, now_s: float) -> TextContext | None:
        self.expire(now_s)
        slot = self._slots.get(key)
        if slot is None:
            self.misses += 1
            return None
        self.hits += 1
        slot.last_used_s = now_s
        self._slots.move_to_end(key)
        return slot.entry

    def put(self, key: ContextKey, entry: TextContext, now_s: float) -> None:
        """Store (or re-measure) `entry` under `key` as the most recently used."""
        old = self._slots.get(key)
        if old is not None:
            if old.entry is not entry:
                self.evictions[EVICT_REPLACED] += 1
            self._bytes -= old.nbytes
            del self._slots[key]
        size = entry.nbytes
        self._slots[key] = _Slot(entry, size, now_s)
        self._bytes += size
        self._enforce()

    def remove(self, key: ContextKey, reason: str = EVICT_CLOSED) -> bool:
        slot = self._slots.pop(key, None)
        if slot is None:
            return False
        self._bytes -= slot.nbytes
        self.evictions[reason] += 1
        return True

    def expire(self, now_s: float) -> int:
        deadline = now_s - self.limits.idle_ttl_s
        stale = [key for key, slot in self._slots.items() if slot.last_used_s < deadline]
        for key in stale:
            self.remove(key, EVICT_TTL)
        return len(stale)

    def _enforce(self) -> None:
        while self._slots and (len(self._slots) > self.limits.max_contexts
                               or self._bytes > self.limits.text_budget_bytes):
            self.remove(next(iter(self._slots)), EVICT_BUDGET)
