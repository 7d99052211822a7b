"""3 real replicas behind real nginx, 16 concurrent sessions: kill one, bring it back.

What the servers say decides (`holders`: each replica asked directly whether it holds a
context at the edge's state), plus each reply's `CallCost.resynced` (a full resend after the
server answered a mismatch):
- affinity: every context lives on exactly one replica;
- a replica SIGKILLed mid-run: every step still completes; exactly the contexts it held are
  resent, once each; the others are never resent and stay where they were;
- the replica back on its port: exactly its old share of contexts moves back (once each).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scale_helpers import close_sessions, holders, needs_nginx, open_sessions, run_phase, sigkill, tiny_fleet

from cloud_service.balancer.fleet import LocalFleet
from cloud_service.security import new_token

pytestmark = [pytest.mark.slow, pytest.mark.triton, needs_nginx]
SESSIONS = 16
STEPS_PER_PHASE = 3


@pytest.fixture()
def token() -> str:
    return new_token()


@pytest.fixture()
def fleet(tiny_qwen3_dir: Path, tmp_path: Path, token: str) -> Iterator[LocalFleet]:
    with tiny_fleet(tiny_qwen3_dir, tmp_path, token) as started:
        yield started


def _owner(where: dict[str, set[int]]) -> dict[str, int]:
    assert all(len(replicas) == 1 for replicas in where.values()), f"a context on != 1 replica: {where}"
    return {context: next(iter(replicas)) for context, replicas in where.items()}


def test_a_dead_replica_moves_only_its_contexts_once_and_its_return_moves_only_its_share(
        fleet: LocalFleet, token: str) -> None:
    sessions = open_sessions(fleet.endpoint, token, SESSIONS)
    try:
        run_phase(sessions, "warm", STEPS_PER_PHASE)
        assert [s.errors for s in sessions] == [[]] * SESSIONS
        before = _owner(holders(fleet, sessions, token))
        assert len(set(before.values())) >= 2  # the hash spreads contexts (all 3: p > 0.99)
        victim = max(range(3), key=lambda i: list(before.values()).count(i))
        on_victim = {c for c, r in before.items() if r == victim}

        # Killed while every session is mid-phase (after each took one step of it).
        kill = lambda: sigkill(fleet.replicas[victim])  # noqa: E731
        run_phase(sessions, "failover", STEPS_PER_PHASE, after_first_step=kill)
        assert [s.errors for s in sessions] == [[]] * SESSIONS
        assert all(s.steps == 2 * STEPS_PER_PHASE for s in sessions)
        resent = {s.conversation.context_id: s.resyncs["failover"] for s in sessions}
        assert resent == {c: int(c in on_victim) for c in resent}  # only its contexts, once each
        during = _owner(holders(fleet, sessions, token))
        assert all(during[c] == before[c] for c in before if c not in on_victim)  # the rest stayed put
        assert all(during[c] != victim for c in on_victim)

        fleet.restart(victim)
        time.sleep(fleet.config.fail_timeout_s)  # nginx tries a failed replica again after this
        run_phase(sessions, "back", STEPS_PER_PHASE)
        assert [s.errors for s in sessions] == [[]] * SESSIONS
        moved_back = {s.conversation.context_id for s in sessions if s.resyncs["back"]}
        assert moved_back == on_victim and all(s.resyncs["back"] <= 1 for s in sessions)
        assert _owner(holders(fleet, sessions, token)) == before  # the ring is the one it was
    finally:
        close_sessions(sessions)


@pytest.fixture()
def two_replicas(tiny_qwen3_dir: Path, tmp_path: Path, token: str) -> Iterator[LocalFleet]:
    with tiny_fleet(tiny_qwen3_dir, tmp_path, token, replicas=2) as started:
        yield started


def test_a_new_replica_takes_only_its_share_of_the_ring(two_replicas: LocalFleet, token: str) -> None:
    """2 -> 3 replicas (nginx reloaded): the contexts that move all move to the new one; the rest stay."""
    fleet = two_replicas
    sessions = open_sessions(fleet.endpoint, token, SESSIONS)
    try:
        run_phase(sessions, "warm", STEPS_PER_PHASE)
        before = _owner(holders(fleet, sessions, token))
        fleet.add_replica()
        run_phase(sessions, "grown", STEPS_PER_PHASE)
        assert [s.errors for s in sessions] == [[]] * SESSIONS
        after = _owner(holders(fleet, sessions, token))
        moved = {c for c in after if after[c] != before[c]}
        assert moved and all(after[c] == 2 for c in moved)  # only onto the new replica
        # Its share: a third on average (binomial over 16 random ids, so it varies), never a reshuffle.
        assert len(moved) <= SESSIONS * 3 // 4
        resent = {s.conversation.context_id: s.resyncs["grown"] for s in sessions}
        assert resent == {c: int(c in moved) for c in resent}  # each moved context resent once
    finally:
        close_sessions(sessions)
