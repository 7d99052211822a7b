"""`ContextStore`: the server's per-context cache, bounded in bytes, evicted by LRU and idle TTL.

Entries are anything with an `nbytes` property (KV cache + text held). Sizes change while an
entry is in use (its KV grows), so the store re-measures an entry whenever the engine hands it
back (`settle`) and evicts least-recently-used entries until the total fits the budget again.
The counters feed the model's Prometheus metrics.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)

# Why an entry left the store (a label of the evictions metric).
EVICT_BUDGET = "budget"  # the byte budget was exceeded: least recently used first
EVICT_TTL = "ttl"  # idle for longer than the TTL
EVICT_REPLACED = "replaced"  # a create replaced the context under the same id
EVICT_CLOSED = "closed"  # the client closed it
EVICTION_REASONS = (EVICT_BUDGET, EVICT_TTL, EVICT_REPLACED, EVICT_CLOSED)


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


EntryT = TypeVar("EntryT", bound=Sized)


@dataclass(frozen=True)
class StoreLimits:
    """How much the store may hold."""

    budget_bytes: int  # KV + text bytes of every context together
    idle_ttl_s: float  # a context unused for this long is dropped

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise BadInputError(f"cache budget must be > 0 bytes, got {self.budget_bytes}")
        if not self.idle_ttl_s > 0:
            raise BadInputError(f"idle TTL must be > 0 s, got {self.idle_ttl_s}")


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of the store's counters (monotonic except the two gauges)."""

    hits: int
    misses: int
    evictions: dict[str, int]  # reason -> count
    bytes_held: int
    contexts: int


@dataclass
class _Slot(Generic[EntryT]):
    entry: EntryT
    nbytes: int
    last_used_s: float


class ContextStore(Generic[EntryT]):
    """Key -> entry, least recently used first; `now_s` is a monotonic clock reading."""

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits
        self._slots: OrderedDict[Hashable, _Slot[EntryT]] = OrderedDict()
        self._bytes_held = 0
        self.hits = 0
        self.misses = 0
        self.evictions: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slots

    @property
    def bytes_held(self) -> int:
        return self._bytes_held

    def get(self, key: Hashable, now_s: float) -> EntryT | None:
        """The entry under `key` (counted as a hit) or None (a miss); marks it most recently used."""
        self.expire(now_s)
        slot = self._slots.get(key)
        if slot is None:
            self.misses += 1
            return None
        self.hits += 1
        slot.last_used_s = now_s
        self._slots.move_to_end(key)
        return slot.entry

    def peek(self, key: Hashable) -> EntryT | None:
        """The entry under `key` without counting or touching it."""
        slot = self._slots.get(key)
        return None if slot is None else slot.entry

    def put(self, key: Hashable, entry: EntryT, now_s: float) -> None:
        """Store `entry` as the most recently used, replacing any entry under `key`."""
        old = self._slots.get(key)
        if old is not None and old.entry is not entry:
            self._drop(key, EVICT_REPLACED)
        elif old is not None:
            self._bytes_held -= old.nbytes
            del self._slots[key]
        size = entry.nbytes
        self._slots[key] = _Slot(entry, size, now_s)
        self._bytes_held += size
        self._enforce_budget()

    def settle(self, key: Hashable) -> None:
        """Re-measure the entry under `key` (its KV may have grown) and enforce the budget."""
        slot = self._slots.get(key)
        if slot is not None:
            size = slot.entry.nbytes
            self._bytes_held += size - slot.nbytes
            slot.nbytes = size
        self._enforce_budget()

    def remove(self, key: Hashable, reason: str = EVICT_CLOSED) -> bool:
        """Forget `key`; True when it was there."""
        if key not in self._slots:
            return False
        self._drop(key, reason)
        return True

    def expire(self, now_s: float) -> int:
        """Drop every entry idle for longer than the TTL; return how many."""
        deadline = now_s - self.limits.idle_ttl_s
        stale = [key for key, slot in self._slots.items() if slot.last_used_s < deadline]
        for key in stale:
            self._drop(key, EVICT_TTL)
        return len(stale)

    def stats(self) -> StoreStats:
        return StoreStats(
            hits=self.hits, misses=self.misses,
            evictions={reason: self.evictions[reason] for reason in EVICTION_REASONS},
            bytes_held=self._bytes_held, contexts=len(self._slots),
        )

    def _enforce_budget(self) -> None:
        # Oldest first, never the entry just used (the last one): evicting it after its own call
        # would turn every later call of that context into a silent full resend and prefill. The
        # engine refuses a context that alone would exceed the budget (ContextTooLarge), so the
        # one kept can overshoot only by what a refusal's estimate missed.
        while self._bytes_held > self.limits.budget_bytes and len(self._slots) > 1:
            oldest = next(iter(self._slots))
            self._drop(oldest, EVICT_BUDGET)
        if self._bytes_held > self.limits.budget_bytes:
            log.warning("one context holds %d bytes, more than the whole cache budget of %d: kept",
                        self._bytes_held, self.limits.budget_bytes)

    def _drop(self, key: Hashable, reason: str) -> None:
        slot = self._slots.pop(key)
        self._bytes_held -= slot.nbytes
        self.evictions[reason] += 1
        log.debug("context dropped (%s), %d bytes freed", reason, slot.nbytes)
