"""`ResilientLLM`: the cloud link as the step loop should see it when the network comes and goes.

An `LLMBackend` around `TritonLLM` that adds what a laptop or a Jetson on a flaky link needs:

- bounded retries, only for transport errors that are safe to retry (`retry.retryable`), all
  within the call's deadline;
- a circuit breaker: after a call fails (its retries spent) every call fails at once with
  `CloudUnavailableError` for the back-off period, so the loop lets the SLM write the step
  without waiting (the step is marked "degraded"); a background `HealthMonitor` (a real tiny
  inference, on a fresh channel: see `TritonLink.renew`) closes it when the cloud answers again;
- a check call on the first `open()`: a wrong edge token raises `NotAuthorizedError` there,
  before any step, instead of hiding as "offline"; so does an unreachable cloud
  (`CloudUnreachableError`: a wrong URL or port looks like nothing else), unless `offline_ok`
  says a run that starts offline is fine, which only opens the breaker;
- optional background context sync: `push(transcript)` sends the SLM's steps as ABSORB calls
  on a worker thread while the SLM keeps writing, so the next cloud step carries little text
  and finds its KV warm.

What reaches the loop: `NotAuthorizedError` (fix the token) propagates; every other cloud
failure of a call, a refused request included, becomes `CloudUnavailableError` (that step
degrades; a refused request does not open the breaker, the cloud itself is fine). A context the
server lost (restart, eviction) is recovered inside `TritonConversation` by one full resend,
reported in `CallCost.resync_*`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    CloudUnreachableError,
    NotAuthorizedError,
)
from edge_client.link.breaker import BreakerSnapshot, BreakerState, CircuitBreaker, Clock
from edge_client.link.delta import TritonConversation
from edge_client.link.health import HealthMonitor
from edge_client.link.retry import RetryPolicy, retryable
from edge_client.link.transport import CloudLinkConfig
from edge_client.link.triton import TritonLLM
from edge_client.llm_backend import CallCost, LLMAction, LLMReply, LLMRequest, empty_score_reply
from onnx_lm import GREEDY, ChatMessage

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ResilienceConfig:
    """Retries, breaker, health pings and background sync of the cloud link."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_s: float = 2.0  # after a fault: no cloud calls for this long, then the health monitor asks
    ping_interval_s: float | None = None  # between pings while the cloud stays down (None: breaker_s)
    ping_timeout_s: float = 2.0  # deadline of each exchange of the start check and of a health ping
    check_at_start: bool = True  # a check call on the first open(): a wrong token fails there
    # The cloud unreachable at that check: False raises CloudUnreachableError (a wrong URL or port
    # must not pass for an outage); True lets the SLM write alone until the cloud answers.
    offline_ok: bool = False
    background_sync: bool = False  # push SLM steps to the cloud (ABSORB) while the SLM writes

    def __post_init__(self) -> None:
        if not isinstance(self.retry, RetryPolicy):
            raise BadInputError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
        for name in ("breaker_s", "ping_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise BadInputError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.ping_interval_s is not None and not (
            math.isfinite(self.ping_interval_s) and self.ping_interval_s > 0
        ):
            raise BadInputError(f"ping_interval_s must be a positive number of seconds, got "
                                f"{self.ping_interval_s!r}")

    @property
    def ping_every_s(self) -> float:
        return self.ping_interval_s if self.ping_interval_s is not None else self.breaker_s


def connect(url: str, token: str | None = None, *, timeout_s: float = CloudLinkConfig.timeout_s,
            tls_root_cert: Path | str | None = None, gzip: bool = False, offline_ok: bool | None = None,
            resilience: ResilienceConfig | None = None) -> ResilientLLM:
    """The cloud LLM at `url` (Triton's gRPC HOST:PORT) as the step loop should use it.

    Retries, circuit breaker and health monitor included (see `ResilientLLM`); no network traffic
    until the first `open()`, which checks the token. `timeout_s` is every call's deadline;
    `tls_root_cert` a PEM to trust for TLS. `offline_ok` (overrides `resilience.offline_ok`; default
    False): whether a cloud unreachable at the first `open()` may leave the SLM alone instead of
    raising CloudUnreachableError. Close it (or use it as a context manager) after use.
    Raises BadInputError for a malformed url or a missing certificate.
    """
    link = CloudLinkConfig(url, token, timeout_s=timeout_s, gzip=gzip,
                           tls_root_cert=Path(tls_root_cert) if tls_root_cert is not None else None)
    resilience = resilience or ResilienceConfig()
    if offline_ok is not None:
        resilience = replace(resilience, offline_ok=offline_ok)
    return ResilientLLM.connect(link, resilience)


class ResilientLLM:
    """`LLMBackend`: `TritonLLM` plus retries, a circuit breaker, a health monitor and background sync.

    A context manager; `close()` stops the monitor's thread and closes the channel. Build it with
    `edge_client.connect(url, token)`, `ResilientLLM.connect(CloudLinkConfig(...), ResilienceConfig(...))`,
    or around a `TritonLLM` of your own (its own link, interceptors, `resend_full`).
    """

    name = "triton"

    def __init__(self, llm: TritonLLM, config: ResilienceConfig | None = None, *,
                 clock: Clock = time.monotonic) -> None:
        self.llm = llm
        self.config = config or ResilienceConfig()
        self.breaker = CircuitBreaker(self.config.breaker_s, clock=clock)
        self.monitor = HealthMonitor(self.breaker, self._ping, ping_interval_s=self.config.ping_every_s,
                                     ping_timeout_s=self.config.ping_timeout_s).start()
        self._checked = not self.config.check_at_start
        self.retries = 0  # calls tried again after a safe-to-retry transport error
        self._retries_lock = threading.Lock()
        # One worker for every conversation's background sync: pushes are cheap and ordered.
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="cloud-sync") \
            if self.config.background_sync else None

    @classmethod
    def connect(cls, link_config: CloudLinkConfig, config: ResilienceConfig | None = None) -> ResilientLLM:
        """A TritonLLM on its own link, wrapped. No network traffic until the first open()."""
        return cls(TritonLLM(link_config), config)

    @property
    def provider(self) -> str:
        return f"triton {self.llm.config.url}"

    def breaker_state(self) -> BreakerSnapshot:
        return self.breaker.snapshot()

    def check(self) -> None:
        """A real tiny inference now. Raises NotAuthorizedError (wrong token), CloudRejectedError
        (a server that does not speak this contract) and, unless `offline_ok`, CloudUnreachableError
        (nothing answers at the URL); with `offline_ok` an unreachable cloud only opens the breaker
        (its one log line says so)."""
        try:
            self._ping(self.config.ping_timeout_s)
        except (NotAuthorizedError, CloudRejectedError):
            raise
        except CloudError as exc:
            if not self.config.offline_ok:
                raise CloudUnreachableError(
                    f"the cloud at {self.llm.config.url} did not answer the start check ({exc}); check "
                    "the URL and port (glimp serve prints them), or allow a run that starts offline "
                    "(offline_ok=True; glimp run --offline-ok or GLIMP_OFFLINE_OK=1)"
                ) from exc
            self.breaker.trip(f"start check: {exc}")
        self._checked = True

    def open(self, messages: Sequence[ChatMessage]) -> ResilientConversation:
        """A conversation; the first one runs the start check (see `check`)."""
        if not self._checked:
            self.check()
        return ResilientConversation(self, self.llm.open(messages))

    def close(self) -> None:
        """Stop the monitor and the sync worker, send the context closes still queued (a short
        bounded wait: see `TritonLLM.close`), close the channel."""
        self.monitor.stop()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True, cancel_futures=True)
        self.llm.close()

    def __enter__(self) -> ResilientLLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def count_retry(self) -> None:
        with self._retries_lock:
            self.retries += 1

    def _ping(self, timeout_s: float) -> None:
        if self.breaker.state == BreakerState.OPEN:
            self.llm.link.renew()  # see TritonLink.renew: a channel that saw the outage may still back off
        self.llm.ping(timeout_s)

    def _submit(self, job: ResilientConversation) -> Future[None] | None:
        return self._sync_pool.submit(job.drain) if self._sync_pool is not None else None


class ResilientConversation:
    """One question's context: calls with retries behind the breaker, and background pushes."""

    def __init__(self, owner: ResilientLLM, inner: TritonConversation) -> None:
        self._owner = owner
        self._inner = inner
        self._call_lock = threading.Lock()  # one exchange sequence at a time on `inner`
        self._state_lock = threading.Lock()  # guards the fields below
        self._pending: str | None = None  # newest transcript waiting to be pushed
        self._inflight: Future[None] | None = None
        self._unreported = CallCost()  # background bytes not yet folded into a reply
        self.background = CallCost()  # every background push so far (bytes, time)
        self.background_pushes = 0

    @property
    def context_id(self) -> str:
        return self._inner.context_id

    @property
    def client_key(self) -> bytes:
        return self._owner.llm.client_key

    def call(self, request: LLMRequest) -> LLMReply:
        """Run `request` in the cloud. Raises CloudUnavailableError (the step degrades) or
        NotAuthorizedError; the reply's cost includes retries, the wait for a background push,
        and the bytes of background pushes since the last reply."""
        if (empty := empty_score_reply(request)) is not None:
            return empty  # answered here even while the breaker is open: no call at all
        started = time.perf_counter()
        self._refuse_if_open()  # before waiting for a background push: a degraded step must not wait
        with self._state_lock:
            self._pending = None  # this call carries the text itself
        with self._call_lock:
            reply = self._call_guarded(request, started)
            with self._state_lock:
                extra, self._unreported = self._unreported, CallCost()
        # Retries and the wait for a background push are time this step spent on the link.
        round_trip_s = time.perf_counter() - started
        cost = replace(reply.cost, round_trip_s=round_trip_s,
                       first_text_s=round_trip_s - reply.cost.round_trip_s + reply.cost.first_text_s,
                       bytes_up=reply.cost.bytes_up + extra.bytes_up,
                       bytes_down=reply.cost.bytes_down + extra.bytes_down)
        return replace(reply, cost=cost)

    def push(self, transcript: str) -> None:
        """Send `transcript` to the cloud in the background (ABSORB), if background sync is on and
        the cloud is up. Returns at once; a newer push replaces one that has not started."""
        if not self._owner.config.background_sync or self._owner.breaker.state != BreakerState.CLOSED:
            return
        with self._state_lock:
            self._pending = transcript
            if self._inflight is not None and not self._inflight.done():
                return
            self._inflight = self._owner._submit(self)

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        """The conversation's next turn (see TritonConversation.next_turn); no call is made here.

        A push of the last turn's transcript that has not started is dropped: the turn is over.
        """
        with self._state_lock:
            self._pending = None
        with self._call_lock:
            self._inner.next_turn(answer, messages)

    def drain(self) -> None:
        """Worker side of `push`: absorb the newest pending transcript (errors open the breaker)."""
        with self._state_lock:
            transcript, self._pending = self._pending, None
        if transcript is None:
            return
        started = time.perf_counter()
        request = LLMRequest(LLMAction.ABSORB, transcript, GREEDY)  # unused by ABSORB, but required
        with self._call_lock:
            try:
                reply = self._call_guarded(request, started)
            except CloudError as exc:
                log.info("background sync failed: %s", exc)
                return
        cost = reply.cost
        with self._state_lock:
            self.background_pushes += 1
            self.background = _add(self.background, cost)
            self._unreported = _add(self._unreported, cost)

    def wait_synced(self, timeout_s: float | None = None) -> None:
        """Block until no background push is in flight (tests and clean shutdown)."""
        with self._state_lock:
            inflight = self._inflight
        if inflight is not None:
            inflight.result(timeout_s)

    def close(self) -> None:
        """Free the server's copy (sent in the background unless the link says otherwise); skipped
        while the cloud is down (it expires there by itself). No calls afterwards."""
        with self._state_lock:
            self._pending = None
        with self._call_lock:
            if self._owner.breaker.state == BreakerState.CLOSED:
                self._inner.close()
            else:
                self._inner.discard()

    # ---- the guarded call ------------------------------------------------------------------

    def _refuse_if_open(self) -> None:
        breaker = self._owner.breaker
        if not breaker.allow():
            raise CloudUnavailableError(
                f"the cloud is treated as down (circuit breaker open, pinging every "
                f"{self._owner.config.ping_every_s:g} s) after: {breaker.snapshot().reason}"
            )

    def _call_guarded(self, request: LLMRequest, started: float) -> LLMReply:
        breaker = self._owner.breaker
        self._refuse_if_open()
        try:
            return self._with_retries(request, started)
        except NotAuthorizedError:
            raise
        except CloudRejectedError as exc:
            log.error("the cloud refused a %s call; the SLM takes it: %s", request.action.value, exc)
            raise CloudUnavailableError(f"the cloud refused the call: {exc}") from exc
        except CloudError as exc:
            breaker.trip(str(exc))
            if isinstance(exc, CloudUnavailableError):
                raise
            raise CloudUnavailableError(f"the cloud failed: {exc}") from exc

    def _with_retries(self, request: LLMRequest, started: float) -> LLMReply:
        policy = self._owner.config.retry
        deadline = started + self._owner.llm.config.timeout_s
        retry = 0
        while True:
            try:
                reply = self._inner.call(request, timeout_s=max(1e-3, deadline - time.perf_counter()))
            except CloudError as exc:
                retry += 1
                delay = policy.delay_s(retry)
                if (retry > policy.max_retries or not retryable(exc, request.action)
                        or time.perf_counter() + delay >= deadline):
                    raise
                log.info("cloud call failed (%s); retry %d of %d in %.2f s", exc, retry, policy.max_retries,
                         delay)
                self._owner.count_retry()
                time.sleep(delay)
                continue
            return reply


def _add(a: CallCost, b: CallCost) -> CallCost:
    """Field by field: numbers add up, flags combine."""
    summed: dict[str, object] = {}
    for item in fields(CallCost):
        x, y = getattr(a, item.name), getattr(b, item.name)
        summed[item.name] = (x or y) if isinstance(x, bool) else x + y
    return CallCost(**summed)  # type: ignore[arg-type]
