"""ContextStore: LRU order, the byte budget, idle TTL, re-measuring, counters."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cloud_service.engines.context_store import ContextStore, StoreLimits
from glimp_common.errors import BadInputError


@dataclass
class Blob:
    nbytes: int


def store(budget_bytes: int = 100, idle_ttl_s: float = 10.0) -> ContextStore[Blob]:
    return ContextStore(StoreLimits(budget_bytes, idle_ttl_s))


def test_get_counts_hits_and_misses_and_refreshes_recency() -> None:
    s = store()
    s.put("a", Blob(10), now_s=0)
    s.put("b", Blob(10), now_s=0)
    assert s.get("a", now_s=1) is not None
    assert s.get("zz", now_s=1) is None
    s.put("c", Blob(85), now_s=2)  # 105 bytes: the least recently used ("b") must go
    assert "b" not in s and "a" in s and "c" in s
    stats = s.stats()
    assert (stats.hits, stats.misses, stats.evictions["budget"]) == (1, 1, 1)
    assert stats.bytes_held == 95 and stats.contexts == 2


def test_settle_remeasures_a_grown_entry_and_evicts_others_first() -> None:
    s = store(budget_bytes=100)
    s.put("old", Blob(30), now_s=0)
    grown = Blob(30)
    s.put("new", grown, now_s=1)
    grown.nbytes = 80  # its KV grew during a call
    s.settle("new")
    assert "old" not in s and "new" in s and s.bytes_held == 80


def test_the_entry_just_used_is_kept_and_the_others_go() -> None:
    s = store(budget_bytes=100)
    s.put("small", Blob(10), now_s=0)
    s.put("huge", Blob(101), now_s=1)  # alone over the budget (the engine refuses such contexts)
    assert "huge" in s and "small" not in s and s.stats().evictions["budget"] == 1
    s.settle("huge")  # a later call of the same context: still there, not evicted after each call
    assert "huge" in s and s.stats().evictions["budget"] == 1


def test_idle_entries_expire_after_the_ttl() -> None:
    s = store(idle_ttl_s=10)
    s.put("a", Blob(1), now_s=0)
    s.put("b", Blob(1), now_s=5)
    assert s.get("a", now_s=10) is not None  # exactly at the TTL: still there, and touched
    assert s.expire(now_s=15.5) == 1  # "b" idle 10.5 s
    assert "a" in s and "b" not in s and s.stats().evictions["ttl"] == 1


def test_put_under_an_existing_key_replaces_and_remove_closes() -> None:
    s = store()
    s.put("a", Blob(10), now_s=0)
    s.put("a", Blob(20), now_s=1)
    assert s.bytes_held == 20 and s.stats().evictions["replaced"] == 1
    assert s.remove("a") and not s.remove("a")
    assert s.bytes_held == 0 and s.stats().evictions["closed"] == 1


@pytest.mark.parametrize(("budget", "ttl"), [(0, 1.0), (10, 0.0), (-1, 5.0)])
def test_limits_must_be_positive(budget: int, ttl: float) -> None:
    with pytest.raises(BadInputError):
        StoreLimits(budget, ttl)
