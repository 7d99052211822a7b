"""`CircuitBreaker`: closed until a call fails (after its retries), then open for a back-off period.

While open, calls fail at once so the step loop lets the SLM write without waiting; the health
monitor (`edge_client.link.health`) closes it when the cloud answers again.

An outage is two log lines (WARNING), whatever its length: one when the breaker opens, one when
it closes. Every degraded step in between is logged at DEBUG only (the trace marks each one).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_client.errors import BadInputError

log = logging.getLogger(__name__)

_REASON_CHARS = 160  # the outage line quotes its cause, cut to this: one line, not a gRPC dump

Clock = Callable[[], float]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go to the cloud
    OPEN = "open"  # calls fail at once; the health monitor decides when the cloud is back


@dataclass(frozen=True)
class BreakerSnapshot:
    """The breaker's state and counters at one moment."""

    state: BreakerState
    opened_at_s: float | None  # clock time it last opened (None: never)
    reason: str  # the fault that opened it last
    opens: int  # times it went closed -> open
    closes: int  # times it went open -> closed
    rejected_calls: int  # calls failed fast while open


class CircuitBreaker:
    """Closed -> open after a fault; open -> closed when told the cloud answered. Thread-safe."""

    def __init__(self, breaker_s: float = 2.0, *, clock: Clock = time.monotonic) -> None:
        if not math.isfinite(breaker_s) or breaker_s <= 0:
            raise BadInputError(f"the breaker period must be a positive number of seconds, got {breaker_s!r}")
        self.breaker_s = breaker_s
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = BreakerState.CLOSED
        self._opened_at: float | None = None
        self._down_since: float | None = None  # the first trip of the current outage
        self._reason = ""
        self._opens = self._closes = self._rejected = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """True when a call may go to the cloud; counts a fast failure otherwise."""
        with self._lock:
            if self._state == BreakerState.CLOSED:
                return True
            self._rejected += 1
            return False

    def trip(self, reason: str) -> None:
        """A call failed after its retries: open (or stay open, restarting the back-off)."""
        with self._lock:
            if self._state == BreakerState.CLOSED:
                self._opens += 1
                self._down_since = self._clock()
                log.warning("cloud unreachable, the SLM writes alone until it answers (checked again in "
                            "%.1f s): %s", self.breaker_s, one_line(reason))
            self._state, self._opened_at, self._reason = BreakerState.OPEN, self._clock(), reason
            self._changed.notify_all()

    def reset(self) -> None:
        """The cloud answered: close."""
        with self._lock:
            if self._state == BreakerState.OPEN:
                self._closes += 1
                down_s = self._clock() - self._down_since if self._down_since is not None else 0.0
                log.warning("cloud back after %.1f s: cloud steps resume", down_s)
            self._state = BreakerState.CLOSED
            self._changed.notify_all()

    def retry_in_s(self) -> float:
        """Seconds left of the back-off period (0 when closed or already over)."""
        with self._lock:
            if self._state == BreakerState.CLOSED or self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.breaker_s - self._clock())

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            return BreakerSnapshot(self._state, self._opened_at, self._reason, self._opens, self._closes,
                                   self._rejected)

    def wait_open(self, timeout_s: float | None = None) -> bool:
        """Block until the breaker is open (True) or `timeout_s` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._state == BreakerState.OPEN, timeout_s)

    def wake(self) -> None:
        """Wake whoever waits in `wait_open` (used to stop the health monitor's thread)."""
        with self._changed:
            self._changed.notify_all()


def one_line(text: str, limit: int = _REASON_CHARS) -> str:
    """`text` on one line (whitespace runs collapsed), cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"
