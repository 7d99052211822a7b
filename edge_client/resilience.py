"""The parts of a link that survives the real world: retry rules, a circuit breaker, a health probe.

Nothing here knows about Triton or gRPC calls beyond reading a status code: `resilient_link.py`
puts these parts around `TritonLLM`.

- `retryable(error, action)`: which cloud errors are safe to try again. Only transport failures
  the server cannot have acted on twice in a harmful way: UNAVAILABLE (connection refused,
  reset, socket closed) but never the restricted-protocol rejection Triton also sends as
  UNAVAILABLE (that arrives here as `NotAuthorizedError`); DEADLINE_EXCEEDED only for ABSORB,
  because a write that ran out of time may have run, and doing a long call again would double
  the wait: that step degrades instead.
- `CircuitBreaker`: closed until a call fails (after its retries), then open for a back-off
  period; while open, calls fail at once so the step loop lets the SLM write without waiting.
- `HealthProbe`: a background thread that, while the breaker is open, runs a real tiny
  inference every `probe_interval_s` (the first one `breaker_s` after the fault) and closes the
  breaker when it succeeds.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    ContextMismatchError,
    NotAuthorizedError,
)
from edge_client.llm_backend import LLMAction

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failed call is tried again (all within the call's deadline)."""

    max_retries: int = 2  # attempts after the first one; 0: never retry
    backoff_s: float = 0.1  # wait before the first retry
    backoff_multiplier: float = 2.0  # each later retry waits this much longer

    def __post_init__(self) -> None:
        retries = self.max_retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise BadInputError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not math.isfinite(self.backoff_s) or self.backoff_s < 0:
            raise BadInputError(f"backoff_s must be a finite number >= 0, got {self.backoff_s!r}")
        if not math.isfinite(self.backoff_multiplier) or self.backoff_multiplier < 1:
            raise BadInputError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier!r}")

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return self.backoff_s * self.backoff_multiplier ** (retry - 1)


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind a cloud error (`cloud_link.map_rpc_error` chains the RpcError)."""
    cause = error.__cause__
    code = getattr(cause, "code", None)
    if isinstance(cause, grpc.RpcError) and callable(code):
        value = code()
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def retryable(error: CloudError, action: LLMAction) -> bool:
    """Whether `error` from a call doing `action` is safe to try again.

    Never: a rejected token, an invalid request, a refused resend, or an error with no gRPC
    status (it did not come from the transport).
    """
    if isinstance(error, NotAuthorizedError | CloudRejectedError | ContextMismatchError):
        return False
    if not isinstance(error, CloudUnavailableError):
        return False
    code = status_code(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    # Only an absorb is cheap and harmless to repeat after a deadline: it writes nothing new.
    return code == grpc.StatusCode.DEADLINE_EXCEEDED and action == LLMAction.ABSORB


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go to the cloud
    OPEN = "open"  # calls fail at once; the health probe decides when the cloud is back


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
                log.warning("circuit breaker open for %.1f s: %s", self.breaker_s, reason)
            self._state, self._opened_at, self._reason = BreakerState.OPEN, self._clock(), reason
            self._changed.notify_all()

    def reset(self) -> None:
        """The cloud answered: close."""
        with self._lock:
            if self._state == BreakerState.OPEN:
                self._closes += 1
                log.info("circuit breaker closed: the cloud answers again")
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
        """Wake whoever waits in `wait_open` (used to stop the probe thread)."""
        with self._changed:
            self._changed.notify_all()


ProbeCall = Callable[[float], object]  # runs one real tiny inference with this deadline; raises CloudError


class HealthProbe:
    """A daemon thread that closes `breaker` once `probe(timeout_s)` succeeds again.

    While the breaker is open it waits out the back-off period, then probes every
    `probe_interval_s`. A probe rejected for the token closes the breaker too: the cloud is up,
    and the next real call then reports NotAuthorizedError to the user instead of hiding it.
    """

    def __init__(self, breaker: CircuitBreaker, probe: ProbeCall, *, probe_interval_s: float,
                 probe_timeout_s: float) -> None:
        for name, value in (("probe_interval_s", probe_interval_s), ("probe_timeout_s", probe_timeout_s)):
            if not math.isfinite(value) or value <= 0:
                raise BadInputError(f"{name} must be a positive number of seconds, got {value!r}")
        self.breaker = breaker
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.probes = 0  # probes run
        self.last_error = ""  # why the last failed probe failed
        self._probe = probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloud-health-probe", daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread (waits for a probe in flight, at most its deadline, unless `timeout_s`)."""
        self._stop.set()
        self.breaker.wake()
        if self._thread.is_alive():
            self._thread.join(self.probe_timeout_s + 1.0 if timeout_s is None else timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.breaker.wait_open(timeout_s=1.0):
                continue
            # The back-off period first: a cloud that just failed is not asked again at once.
            if self._stop.wait(self.breaker.retry_in_s()):
                return
            while not self._stop.is_set() and self.breaker.state == BreakerState.OPEN:
                if self._probe_once():
                    self.breaker.reset()
                    break
                self._stop.wait(self.probe_interval_s)

    def _probe_once(self) -> bool:
        self.probes += 1
        try:
            self._probe(self.probe_timeout_s)
        except NotAuthorizedError as exc:
            self.last_error = str(exc)
            log.error("health probe: %s", exc)
            return True  # up, but refusing us: let the next call say so
        except CloudError as exc:
            self.last_error = str(exc)
            log.info("health probe: the cloud is still down (%s)", exc)
            return False
        except Exception as exc:  # a probe must never kill the thread that closes the breaker
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("health probe failed unexpectedly")
            return False
        return True
