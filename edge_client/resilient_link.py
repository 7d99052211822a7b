"""`ResilientLLM`: the cloud link as the step loop should see it when the network comes and goes.

An `LLMBackend` around `TritonLLM` that adds what a laptop or a Jetson on a flaky link needs:

- bounded retries, only for transport errors that are safe to retry (`resilience.retryable`),
  all within the call's deadline;
- a circuit breaker: after a call fails (its retries spent) every call fails at once with
  `CloudUnavailableError` for the back-off period, so the loop lets the SLM write the step
  without waiting (the step is marked "degraded"); a background `HealthProbe` (a real tiny
  inference) closes it when the cloud answers again;
- a check call on the first `open()`: a wrong edge token raises `NotAuthorizedError` there,
  before any step, instead of hiding as "offline"; an unreachable cloud only opens the breaker;
- optional background context sync: `push(transcript)` sends the SLM's steps as ABSORB calls
  on a worker thread while the SLM keeps writing, so the next cloud step carries little text
  and finds its KV warm;
- link totals: every exchange (probes and closes included) counted, to check the trace's bytes
  against what crossed the wire.

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

from edge_client.cloud_link import CloudLinkConfig, Exchange, TritonConversation, TritonLink, TritonLLM
from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    NotAuthorizedError,
)
from edge_client.llm_backend import CallCost, LLMAction, LLMReply, LLMRequest
from edge_client.resilience import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    Clock,
    HealthProbe,
    RetryPolicy,
    retryable,
)
from onnx_lm import ChatMessage, SamplingParams
from protos import edge_cloud_v1_pb2 as pb

log = logging.getLogger(__name__)

_ABSORB_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, seed=0)  # unused by ABSORB, but required


@dataclass(frozen=True)
class ResilienceConfig:
    """Retries, breaker, probe and background sync of the cloud link."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_s: float = 2.0  # after a fault: no cloud calls for this long, then the probe asks
    probe_interval_s: float | None = None  # between probes while the cloud stays down (None: breaker_s)
    probe_timeout_s: float = 2.0  # deadline of each exchange of the start check and the probe
    check_at_start: bool = True  # a check call on the first open(): a wrong token fails there
    background_sync: bool = False  # push SLM steps to the cloud (ABSORB) while the SLM writes

    def __post_init__(self) -> None:
        if not isinstance(self.retry, RetryPolicy):
            raise BadInputError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
        for name in ("breaker_s", "probe_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise BadInputError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.probe_interval_s is not None and not (
            math.isfinite(self.probe_interval_s) and self.probe_interval_s > 0
        ):
            raise BadInputError(f"probe_interval_s must be a positive number of seconds, got "
                                f"{self.probe_interval_s!r}")

    @property
    def probe_every_s(self) -> float:
        return self.probe_interval_s if self.probe_interval_s is not None else self.breaker_s


@dataclass(frozen=True)
class LinkTotals:
    """Everything the link exchanged, probes and closes included (bytes of serialized messages)."""

    exchanges: int
    bytes_up: int
    bytes_down: int


class CountingLink(TritonLink):
    """A `TritonLink` that also sums the bytes of every exchange that got a reply (thread-safe)."""

    def __init__(self, config: CloudLinkConfig) -> None:
        super().__init__(config)
        self._count_lock = threading.Lock()
        self._totals = LinkTotals(0, 0, 0)

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None) -> Exchange:
        done = super().exchange(request, timeout_s)
        with self._count_lock:
            was = self._totals
            self._totals = LinkTotals(was.exchanges + 1, was.bytes_up + done.bytes_up,
                                      was.bytes_down + done.bytes_down)
        return done

    @property
    def totals(self) -> LinkTotals:
        with self._count_lock:
            return self._totals


class ResilientLLM:
    """`LLMBackend`: `TritonLLM` plus retries, a circuit breaker, a health probe and background sync.

    A context manager; `close()` stops the probe thread and closes the channel. Build it with
    `ResilientLLM.connect(CloudLinkConfig(...), ResilienceConfig(...))`.
    """

    name = "triton"

    def __init__(self, llm: TritonLLM, config: ResilienceConfig | None = None, *,
                 clock: Clock = time.monotonic) -> None:
        self.llm = llm
        self.config = config or ResilienceConfig()
        self.breaker = CircuitBreaker(self.config.breaker_s, clock=clock)
        self.probe = HealthProbe(self.breaker, self._probe_call, probe_interval_s=self.config.probe_every_s,
                                 probe_timeout_s=self.config.probe_timeout_s).start()
        self._checked = not self.config.check_at_start
        # One worker for every conversation's background sync: pushes are cheap and ordered.
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="cloud-sync") \
            if self.config.background_sync else None

    @classmethod
    def connect(cls, link_config: CloudLinkConfig, config: ResilienceConfig | None = None) -> ResilientLLM:
        """A TritonLLM on a counting link, wrapped. No network traffic until the first open()."""
        return cls(TritonLLM(link_config, link=CountingLink(link_config)), config)

    @property
    def provider(self) -> str:
        return f"triton {self.llm.config.url}"

    @property
    def link_totals(self) -> LinkTotals | None:
        """Bytes of every exchange so far, when the link counts them (`connect` builds one that does)."""
        link = self.llm.link
        return link.totals if isinstance(link, CountingLink) else None

    def breaker_state(self) -> BreakerSnapshot:
        return self.breaker.snapshot()

    def check(self) -> None:
        """A real tiny inference now. Raises NotAuthorizedError (wrong token) and CloudRejectedError
        (a server that does not speak this contract); an unreachable cloud only opens the breaker."""
        try:
            self._probe_call(self.config.probe_timeout_s)
        except (NotAuthorizedError, CloudRejectedError):
            raise
        except CloudError as exc:
            log.warning("the cloud is not reachable at start, the SLM writes until it is: %s", exc)
            self.breaker.trip(f"start check: {exc}")
        self._checked = True

    def open(self, messages: Sequence[ChatMessage]) -> ResilientConversation:
        """A conversation; the first one runs the start check (see `check`)."""
        if not self._checked:
            self.check()
        return ResilientConversation(self, self.llm.open(messages))

    def close(self) -> None:
        self.probe.stop()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=True, cancel_futures=True)
        self.llm.close()

    def __enter__(self) -> ResilientLLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _probe_call(self, timeout_s: float) -> None:
        self.llm.probe(timeout_s)

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
        started = time.perf_counter()
        with self._state_lock:
            self._pending = None  # this call carries the text itself
        with self._call_lock:
            reply = self._call_guarded(request, started)
            with self._state_lock:
                extra, self._unreported = self._unreported, CallCost()
        # Retries and the wait for a background push are time this step spent on the link.
        cost = replace(reply.cost, round_trip_s=time.perf_counter() - started,
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

    def drain(self) -> None:
        """Worker side of `push`: absorb the newest pending transcript (errors open the breaker)."""
        with self._state_lock:
            transcript, self._pending = self._pending, None
        if transcript is None:
            return
        started = time.perf_counter()
        request = LLMRequest(LLMAction.ABSORB, transcript, _ABSORB_SAMPLING)
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
        """Free the server's copy; skipped while the cloud is down (it expires there by itself)."""
        with self._state_lock:
            self._pending = None
        with self._call_lock:
            if self._owner.breaker.allow():
                self._inner.close()

    # ---- the guarded call ------------------------------------------------------------------

    def _call_guarded(self, request: LLMRequest, started: float) -> LLMReply:
        breaker = self._owner.breaker
        if not breaker.allow():
            snap = breaker.snapshot()
            raise CloudUnavailableError(
                f"the cloud is treated as down (circuit breaker open, probing every "
                f"{self._owner.config.probe_every_s:g} s) after: {snap.reason}"
            )
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
