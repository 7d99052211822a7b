"""`ResilientLLM`: the cloud link as the step loop should see it when the network comes and goes.

An `LLMBackend` around `TritonLLM` that adds what a laptop or a Jetson on a flaky link needs:

- bounded retries, only for transport errors that are safe to retry (`resilience.retryable`),
  all within the call's deadline;
- a circuit breaker: after a call fails (its retries spent) every call fails at once with
  `CloudUnavailableError` for the back-off period, so the loop lets the SLM write the step
  without waiting (the step is marked "degraded"); a background `HealthProbe` (a real tiny
  inference, on a fresh channel: see `ManagedLink`) closes it when the cloud answers again;
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

import gzip
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace

import grpc
from tritonclient.grpc import service_pb2

from edge_client.cloud_link import (
    TOKEN_METADATA_KEY,
    CloudLinkConfig,
    TritonConversation,
    TritonLink,
    TritonLLM,
)
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

log = logging.getLogger(__name__)

_ABSORB_SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, seed=0)  # unused by ABSORB, but required
_HTTP2_FRAME_BYTES = 16384  # SETTINGS_MAX_FRAME_SIZE default: larger messages span several DATA frames


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
class GrpcFraming:
    """HTTP/2 + gRPC bytes around the messages of unary calls: what the wire adds to the trace's count.

    The trace counts serialized messages (`CallCost.bytes_*`). On the wire each call also has a
    5-byte gRPC prefix and a 9-byte DATA frame header per 16 KiB frame; a HEADERS frame, in which
    HPACK indexes the fields it has seen, but gRPC sends custom metadata (the edge token) as a
    literal on every call; the reply's headers and trailers; and WINDOW_UPDATE frames. Each new
    connection adds the preface, SETTINGS, BDP pings and the first, unindexed header blocks.
    Sizes measured with grpcio 1.85 against tritonserver 2.51 through a frame-parsing proxy.
    """

    request_headers_bytes: int = 18  # HEADERS frame header + indexed fields + the grpc-timeout literal
    response_headers_bytes: int = 22  # response HEADERS + trailers (grpc-status)
    request_flow_bytes: int = 26  # WINDOW_UPDATEs (stream + connection) the client sends per reply
    response_flow_bytes: int = 13  # the server's WINDOW_UPDATE per request
    connection_up_bytes: int = 420  # preface, SETTINGS (+ack), pings, first header blocks
    connection_down_bytes: int = 195

    def request_bytes(self, message_bytes: int, metadata: Sequence[tuple[str, str]] = ()) -> int:
        """Wire bytes of one request on an open connection carrying `message_bytes` (compressed if so)."""
        literals = sum(_hpack_literal_bytes(key, value) for key, value in metadata)
        return _data_bytes(message_bytes) + self.request_headers_bytes + literals + self.request_flow_bytes

    def response_bytes(self, message_bytes: int) -> int:
        """Wire bytes of one reply carrying `message_bytes`."""
        return _data_bytes(message_bytes) + self.response_headers_bytes + self.response_flow_bytes


def _data_bytes(message_bytes: int) -> int:
    framed = message_bytes + 5  # gRPC: 1 compressed flag + 4 length bytes
    return framed + 9 * max(1, math.ceil(framed / _HTTP2_FRAME_BYTES))


def _hpack_literal_bytes(key: str, value: str) -> int:
    """A literal header field with a new name, not indexed (RFC 7541 6.2.2), strings not Huffman-coded."""
    return 1 + _hpack_int_bytes(len(key)) + len(key) + _hpack_int_bytes(len(value)) + len(value)


def _hpack_int_bytes(n: int, prefix_bits: int = 7) -> int:
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return 1
    n, size = n - limit, 2
    while n >= 128:
        n, size = n >> 7, size + 1
    return size


@dataclass(frozen=True)
class LinkTotals:
    """Everything the link exchanged, probes and closes included."""

    calls: int  # gRPC calls that got a reply
    bytes_up: int  # serialized messages, as the trace counts them
    bytes_down: int
    connections: int  # times the channel became ready (a new TCP + HTTP/2 connection)
    wire_up_bytes: int  # estimated wire bytes (GrpcFraming, gzip applied as gRPC does)
    wire_down_bytes: int


class ManagedLink(TritonLink):
    """A `TritonLink` that counts the bytes of every call and can start over on a fresh channel.

    gRPC backs off between attempts to reconnect to a server that refused connections (1 s,
    growing to 120 s), so a channel that lived through a long outage can find a returning cloud
    only many seconds after it is back. The health probe therefore asks on a fresh channel
    (`renew`), and once a probe succeeds that connected channel carries the calls that follow.
    """

    def __init__(self, config: CloudLinkConfig, framing: GrpcFraming | None = None) -> None:
        # Deliberately not TritonLink.__init__: the channel belongs to the inner link, which
        # `renew` replaces; `exchange` (inherited) sends through `send_infer` below.
        self.config = config
        self.framing = framing or GrpcFraming()
        self._token_metadata = ((TOKEN_METADATA_KEY, config.token),) if config.token else ()
        self._lock = threading.Lock()
        self._totals = LinkTotals(0, 0, 0, 0, 0, 0)
        self._inner = self._new_inner()

    def send_infer(self, infer: service_pb2.ModelInferRequest,
                   timeout_s: float | None = None) -> service_pb2.ModelInferResponse:
        response = self._inner.send_infer(infer, timeout_s)
        up, down = infer.ByteSize(), response.ByteSize()
        wire_up = self.framing.request_bytes(self._sent_bytes(infer, up), self._token_metadata)
        wire_down = self.framing.response_bytes(down)
        with self._lock:
            was = self._totals
            self._totals = replace(
                was, calls=was.calls + 1, bytes_up=was.bytes_up + up, bytes_down=was.bytes_down + down,
                wire_up_bytes=was.wire_up_bytes + wire_up, wire_down_bytes=was.wire_down_bytes + wire_down,
            )
        return response

    @property
    def totals(self) -> LinkTotals:
        with self._lock:
            return self._totals

    def renew(self) -> None:
        """Carry on over a new channel (connecting at once); calls still on the old one are cancelled."""
        fresh = self._new_inner()
        with self._lock:
            old, self._inner = self._inner, fresh
        self._retire(old)

    def close(self) -> None:
        self._retire(self._inner)

    def _new_inner(self) -> TritonLink:
        link = TritonLink(self.config)
        # cloud_link has no public accessor for the channel (yet): count connections on it.
        link.channel.subscribe(self._on_state)
        return link

    def _retire(self, link: TritonLink) -> None:
        link.channel.unsubscribe(self._on_state)
        link.close()

    def _sent_bytes(self, infer: service_pb2.ModelInferRequest, size: int) -> int:
        if not self.config.gzip:
            return size
        # gRPC sends the gzip form (level 6, as zlib's default) only when it is smaller.
        return min(size, len(gzip.compress(infer.SerializeToString(), compresslevel=6, mtime=0)))

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        if state != grpc.ChannelConnectivity.READY:
            return
        with self._lock:
            was = self._totals
            self._totals = replace(was, connections=was.connections + 1,
                                   wire_up_bytes=was.wire_up_bytes + self.framing.connection_up_bytes,
                                   wire_down_bytes=was.wire_down_bytes + self.framing.connection_down_bytes)


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
        self.retries = 0  # calls tried again after a safe-to-retry transport error
        self._retries_lock = threading.Lock()
        # One worker for every conversation's background sync: pushes are cheap and ordered.
        self._sync_pool = ThreadPoolExecutor(1, thread_name_prefix="cloud-sync") \
            if self.config.background_sync else None

    @classmethod
    def connect(cls, link_config: CloudLinkConfig, config: ResilienceConfig | None = None) -> ResilientLLM:
        """A TritonLLM on a `ManagedLink`, wrapped. No network traffic until the first open()."""
        return cls(TritonLLM(link_config, link=ManagedLink(link_config)), config)

    @property
    def provider(self) -> str:
        return f"triton {self.llm.config.url}"

    @property
    def link_totals(self) -> LinkTotals | None:
        """Bytes of every exchange so far, when the link counts them (`connect` builds one that does)."""
        link = self.llm.link
        return link.totals if isinstance(link, ManagedLink) else None

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

    def count_retry(self) -> None:
        with self._retries_lock:
            self.retries += 1

    def _probe_call(self, timeout_s: float) -> None:
        link = self.llm.link
        if isinstance(link, ManagedLink) and self.breaker.state == BreakerState.OPEN:
            link.renew()  # see ManagedLink: a channel that saw the outage may still be backing off
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
        self._refuse_if_open()  # before waiting for a background push: a degraded step must not wait
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
            if self._owner.breaker.state == BreakerState.CLOSED:
                self._inner.close()

    # ---- the guarded call ------------------------------------------------------------------

    def _refuse_if_open(self) -> None:
        breaker = self._owner.breaker
        if not breaker.allow():
            raise CloudUnavailableError(
                f"the cloud is treated as down (circuit breaker open, probing every "
                f"{self._owner.config.probe_every_s:g} s) after: {breaker.snapshot().reason}"
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
