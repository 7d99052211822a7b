"""`Supervisor`: keeps a started `TritonServer` answering, by checking it with a real inference.

Triton reports a model READY while its python-backend stub is dead (every request then fails
with INTERNAL "Stub process ... is not healthy", and no new stub starts), and a crashed server
just stops answering. So every `period_s` a thread runs the readiness inference (create, one
greedy token, close); on failure it clears the gateway's readiness (ServerReady/ModelReady say
false), then heals: an explicit load of the model through the server's private socket when the
process lives (a new stub, ~0.2 s; the context cache is lost), a restart of the process when it
does not or the reload did not help. A log line and the `heals` counter record each one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

from cloud_service.errors import ServerStartError
from cloud_service.launcher import TritonServer
from cloud_service.readiness import ReadinessError
from protos.contract import MODEL_NAME

log = logging.getLogger(__name__)

HEAL_RELOAD = "reload"  # the process lived: the model was loaded again (a new stub)
HEAL_RESTART = "restart"  # the process was gone or the reload did not help: a new process


@dataclass(frozen=True)
class SupervisorConfig:
    """How often and how patiently to check."""

    period_s: float = 2.0  # between two readiness inferences
    check_timeout_s: float = 5.0  # deadline of one (period + timeout: the worst detection time)
    max_failed_heals: int = 3  # consecutive heals that did not bring it back: give up

    def __post_init__(self) -> None:
        if min(self.period_s, self.check_timeout_s) <= 0 or self.max_failed_heals < 1:
            raise ValueError("period_s and check_timeout_s must be > 0, max_failed_heals >= 1")


@dataclass(frozen=True)
class Heal:
    """One heal, as recorded."""

    kind: str  # HEAL_RELOAD or HEAL_RESTART
    cause: str  # the failed readiness check's message
    detected_s: float  # monotonic time the failure was seen
    healed_s: float  # monotonic time the server answered again


class Supervisor:
    """A thread checking and healing `server`; `start()`, `stop()`; `gave_up` is set when it could not."""

    def __init__(self, server: TritonServer, config: SupervisorConfig | None = None) -> None:
        self.server = server
        self.config = config or SupervisorConfig()
        self.heals: Counter[str] = Counter()  # kind -> count
        self.history: list[Heal] = []
        self.healed = threading.Condition()  # notified after each heal
        self.gave_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="glimp-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.config.check_timeout_s + self.server.config.startup_timeout_s)

    def wait_heal(self, count: int, timeout_s: float) -> bool:
        """Block until at least `count` heals happened (or the timeout); True when they did."""
        with self.healed:
            return self.healed.wait_for(lambda: len(self.history) >= count, timeout_s)

    def check_once(self) -> Heal | None:
        """One readiness inference; heal when it fails. The heal done, or None when all was well."""
        try:
            self.server.check_ready(self.config.check_timeout_s)
            return None
        except ReadinessError as exc:
            cause = str(exc)
        detected = time.monotonic()
        gateway = self.server.gateway
        if gateway is not None:
            gateway.healthy.clear()
        log.warning("glimp_llm failed its readiness inference (%s): healing", cause.splitlines()[0][:200])
        try:
            kind = self._heal()
        finally:
            if gateway is not None:
                gateway.healthy.set()
        heal = Heal(kind, cause, detected, time.monotonic())
        self.heals[kind] += 1
        with self.healed:
            self.history.append(heal)
            self.healed.notify_all()
        log.warning("glimp_llm healed by %s in %.2f s (heals so far: %s)", kind,
                    heal.healed_s - heal.detected_s, dict(self.heals))
        return heal

    def _heal(self) -> str:
        if self.server.is_running() and self._reload():
            return HEAL_RELOAD
        self.server.restart()
        return HEAL_RESTART

    def _reload(self) -> bool:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        upstream = self.server.upstream
        if upstream is None:
            return False
        try:
            with grpcclient.InferenceServerClient(upstream) as client:
                client.load_model(MODEL_NAME, client_timeout=self.server.config.startup_timeout_s)
            self.server.check_ready(self.config.check_timeout_s)
            return True
        except (InferenceServerException, ReadinessError) as exc:
            log.warning("reloading glimp_llm did not help (%s): restarting the server", exc)
            return False

    def _watch(self) -> None:
        failed = 0
        while not self._stop.wait(self.config.period_s):
            try:
                self.check_once()
                failed = 0
            except ServerStartError as exc:
                failed += 1
                log.error("healing glimp_llm failed (%d in a row): %s", failed, exc)
                if failed >= self.config.max_failed_heals:
                    self.gave_up.set()
                    return
