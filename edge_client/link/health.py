"""`HealthMonitor`: a background thread that closes an open breaker once the cloud answers again.

While the breaker is open it waits out the back-off period, then pings the cloud (a real tiny
inference) every `ping_interval_s` until one succeeds.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from edge_client.errors import BadInputError, CloudError, NotAuthorizedError
from edge_client.link.breaker import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)


PingCall = Callable[[float], object]  # runs one real tiny inference with this deadline; raises CloudError


class HealthMonitor:
    """A daemon thread that closes `breaker` once `ping(timeout_s)` succeeds again.

    While the breaker is open it waits out the back-off period, then pings every
    `ping_interval_s`. A ping rejected for the token closes the breaker too: the cloud is up,
    and the next real call then reports NotAuthorizedError to the user instead of hiding it.
    """

    def __init__(self, breaker: CircuitBreaker, ping: PingCall, *, ping_interval_s: float,
                 ping_timeout_s: float) -> None:
        for name, value in (("ping_interval_s", ping_interval_s), ("ping_timeout_s", ping_timeout_s)):
            if not math.isfinite(value) or value <= 0:
                raise BadInputError(f"{name} must be a positive number of seconds, got {value!r}")
        self.breaker = breaker
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.pings = 0  # pings sent
        self.last_error = ""  # why the last failed ping failed
        self._ping = ping
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloud-health-monitor", daemon=True)

    def start(self) -> HealthMonitor:
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread (waits for a ping in flight, at most its deadline, unless `timeout_s`)."""
        self._stop.set()
        self.breaker.wake()
        if self._thread.is_alive():
            self._thread.join(self.ping_timeout_s + 1.0 if timeout_s is None else timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.breaker.wait_open(timeout_s=1.0):
                continue
            # The back-off period first: a cloud that just failed is not asked again at once.
            if self._stop.wait(self.breaker.retry_in_s()):
                return
            while not self._stop.is_set() and self.breaker.state == BreakerState.OPEN:
                if self._ping_once():
                    self.breaker.reset()
                    break
                self._stop.wait(self.ping_interval_s)

    def _ping_once(self) -> bool:
        self.pings += 1
        try:
            self._ping(self.ping_timeout_s)
        except NotAuthorizedError as exc:
            self.last_error = str(exc)
            log.error("health monitor: %s", exc)
            return True  # up, but refusing us: let the next call say so
        except CloudError as exc:
            self.last_error = str(exc)
            log.info("health monitor: the cloud is still down (%s)", exc)
            return False
        except Exception as exc:  # a ping must never kill the thread that closes the breaker
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("health ping failed unexpectedly")
            return False
        return True
