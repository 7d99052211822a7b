"""`TritonLLM`: the large model on a Triton server, reached over gRPC, sending only what is new.

The KServe `ModelInferRequest` is built here from `tritonclient.grpc.service_pb2` and sent with
the generated stub on a channel this module owns, so bytes up/down are exactly the serialized
gRPC messages (`ByteSize()`), every call has a deadline, and the edge token travels as the
metadata Triton's restricted protocol checks. No retries here beyond the one full resend a
context mismatch calls for: retries, the circuit breaker and offline mode wrap this class.

A conversation keeps the server's view of its context (the appended text the server holds and
its digest) and sends the delta; when the server answers with a mismatch (unknown context,
other length or digest), it resends the whole transcript once with create=true.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    ContextMismatchError,
    NotAuthorizedError,
)
from edge_client.llm_backend import CallCost, LLMAction, LLMReply, LLMRequest
from onnx_lm import ChatMessage, SamplingParams
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import (
    CONTEXT_ID_MIN_HEX,
    GRPC_AUTH_METADATA_KEY,
    MODEL_NAME,
    PROTOCOL_VERSION,
    REPLY_TENSOR,
    REQUEST_TENSOR,
    TranscriptDigest,
    TranscriptView,
)

log = logging.getLogger(__name__)

TOKEN_METADATA_KEY = GRPC_AUTH_METADATA_KEY  # Triton's restricted-protocol header
_ACTIONS = {
    LLMAction.WRITE_STEP: pb.WRITE_STEP, LLMAction.WRITE_ANSWER: pb.WRITE_ANSWER,
    LLMAction.ABSORB: pb.ABSORB, LLMAction.SCORE: pb.SCORE,
}
_STOP_REASONS = {
    pb.STOP_STRING: "stop_string", pb.EOS: "eos", pb.MAX_TOKENS: "max_tokens", pb.ABSORBED: "absorbed",
}
_LENGTH_PREFIX = struct.Struct("<I")  # KServe raw BYTES: each element is a 4-byte length + data
_MAX_MESSAGE_BYTES = 64 << 20
_GREEDY = SamplingParams(temperature=0.0, top_p=1.0, seed=0)


@dataclass(frozen=True)
class CloudLinkConfig:
    """Where the cloud LLM is and how to talk to it."""

    url: str  # host:port of Triton's gRPC endpoint
    token: str | None = field(default=None, repr=False)  # the shared edge token (GLIMP_EDGE_TOKEN)
    timeout_s: float = 60.0  # deadline of every call, connection included
    tls_root_cert: Path | None = None  # set: TLS, trusting this PEM (the server's CA or self-signed cert)
    tls_server_name: str | None = None  # the certificate's name, when it is not the url's host
    gzip: bool = False  # compress messages (bytes are still counted before compression)
    keepalive_time_s: float = 30.0  # ping an idle connection this often, to notice a dead link early
    keepalive_timeout_s: float = 10.0
    # gRPC waits longer and longer (1 s up to 120 s) before reconnecting to a server that refused
    # connections; capped, a cloud that comes back is reached within this many seconds.
    reconnect_backoff_max_s: float = 1.0
    # Baseline for measurement only: resend the whole transcript on every call, as a link
    # without a server-side context must (the benchmark compares uplink bytes against it).
    resend_full: bool = False

    def __post_init__(self) -> None:
        if not self.url or ":" not in self.url:
            raise BadInputError(f"cloud url must be host:port, got {self.url!r}")
        if not min(self.timeout_s, self.keepalive_time_s, self.keepalive_timeout_s,
                   self.reconnect_backoff_max_s) > 0:
            raise BadInputError("cloud timeouts must be positive")
        if self.tls_root_cert is not None and not Path(self.tls_root_cert).is_file():
            raise BadInputError(f"TLS root certificate {self.tls_root_cert} does not exist")


@dataclass(frozen=True)
class Exchange:
    """One gRPC round trip: the reply and what it cost on the wire."""

    reply: pb.StepReply
    bytes_up: int  # serialized ModelInferRequest
    bytes_down: int  # serialized ModelInferResponse
    round_trip_s: float


class TritonLink:
    """The channel, stub and one raw call: everything the retry/offline wrapper needs to reuse."""

    def __init__(self, config: CloudLinkConfig) -> None:
        self.config = config
        self._channel = _open_channel(config)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = ((TOKEN_METADATA_KEY, config.token),) if config.token else ()

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None) -> Exchange:
        """Send one StepRequest; map gRPC failures to `edge_client.errors`."""
        infer = build_infer_request(request)
        started = time.perf_counter()
        response = self.send_infer(infer, timeout_s)
        elapsed = time.perf_counter() - started
        return Exchange(parse_infer_response(response), infer.ByteSize(), response.ByteSize(), elapsed)

    def send_infer(self, infer: service_pb2.ModelInferRequest,
                   timeout_s: float | None = None) -> service_pb2.ModelInferResponse:
        """One raw KServe ModelInfer call with the deadline, token and compression of this link."""
        try:
            return self._stub.ModelInfer(
                infer, timeout=timeout_s or self.config.timeout_s, metadata=self._metadata,
                compression=grpc.Compression.Gzip if self.config.gzip else None,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.config.url) from exc

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel (to watch its connectivity: `channel.subscribe(callback)`)."""
        return self._channel

    def close(self) -> None:
        self._channel.close()


class TritonLLM:
    """`LLMBackend` for the LLM on Triton. Contexts are scoped to `client_key` (random per instance)."""

    name = "triton"
    provider = "triton"

    def __init__(self, config: CloudLinkConfig, *, client_key: bytes | None = None,
                 link: TritonLink | None = None) -> None:
        if client_key is not None and len(client_key) < 16:
            raise BadInputError("client_key must hold at least 16 random bytes")
        self.config = config
        self.client_key = client_key or os.urandom(32)
        self.link = link or TritonLink(config)

    def open(self, messages: Sequence[ChatMessage]) -> TritonConversation:
        """A new context (created on the server by its first call)."""
        return TritonConversation(self.link, self.client_key, messages, resend_full=self.config.resend_full)

    def probe(self, timeout_s: float | None = None) -> float:
        """A real tiny inference (create, write one token, close); its seconds. Raises CloudError."""
        started = time.perf_counter()
        conversation = self.open([ChatMessage("user", "ping")])
        reply = conversation.call(LLMRequest(LLMAction.WRITE_STEP, "", _GREEDY, max_tokens=1),
                                  timeout_s=timeout_s)
        conversation.close()
        if reply.cost.decode_tokens != 1:
            raise CloudError(f"the probe wrote {reply.cost.decode_tokens} tokens instead of 1")
        return time.perf_counter() - started

    def ready(self, timeout_s: float | None = None) -> bool:
        """True when a real tiny inference succeeds; NotAuthorizedError still raises (retrying won't help)."""
        try:
            self.probe(timeout_s)
        except NotAuthorizedError:
            raise
        except CloudError as exc:
            log.info("cloud not ready: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> TritonLLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class TritonConversation:
    """One context on the server; `call` takes the whole transcript and sends the delta."""

    def __init__(self, link: TritonLink, client_key: bytes, messages: Sequence[ChatMessage], *,
                 resend_full: bool = False) -> None:
        if not messages:
            raise BadInputError("a conversation needs at least one prompt message")
        self._link = link
        self._client_key = client_key
        self.messages = tuple(messages)
        self.context_id = secrets.token_hex(max(16, CONTEXT_ID_MIN_HEX // 2))  # 128 random bits
        self._created = False
        self._resend_full = resend_full
        self._held_text = ""  # the appended text the server holds (as far as we know)
        self._held = TranscriptDigest(self._pairs())

    @property
    def server_view(self) -> TranscriptView:
        """What this side believes the server holds."""
        return self._held.view()

    def call(self, request: LLMRequest, timeout_s: float | None = None) -> LLMReply:
        """Run `request` on the server. Raises CloudError subclasses (see edge_client.errors)."""
        if request.action == LLMAction.SCORE and not request.candidate:
            raise BadInputError("SCORE needs a non-empty candidate")
        # A first call creates the context; a transcript that no longer extends what the server
        # holds is resent whole rather than patched.
        resend = (self._resend_full or not self._created
                  or not request.transcript.startswith(self._held_text))
        first = self._link.exchange(self._step_request(request, create=resend), timeout_s)
        exchanges = [first]
        resync = first if resend and self._created and not self._resend_full else None
        if first.reply.WhichOneof("outcome") == "mismatch":
            mismatch = first.reply.mismatch
            log.info("context %s: %s (%s); resending the transcript", self.context_id[:8],
                     pb.ContextMismatch.Kind.Name(mismatch.kind), mismatch.detail)
            resync = self._link.exchange(self._step_request(request, create=True), timeout_s)
            exchanges.append(resync)
            if resync.reply.WhichOneof("outcome") != "result":
                raise ContextMismatchError(
                    f"the server refused a full resend of context {self.context_id[:8]}: {resync.reply}"
                )
        result = exchanges[-1].reply.result
        self._advance(request, result, created=resend or resync is not None)
        return _reply(result, exchanges, resync)

    def push(self, transcript: str) -> None:
        """Nothing to push: the delta goes with the next call."""

    def close(self) -> None:
        """Free the server's copy (best effort: a failure here only leaves it to the idle TTL)."""
        if not self._created:
            return
        close = pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=self.context_id,
                               client_key=self._client_key, action=pb.CLOSE)
        try:
            self._link.exchange(close)
        except CloudError as exc:
            log.debug("closing context %s failed: %s", self.context_id[:8], exc)
        self._created = False

    def _pairs(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.messages]

    def _step_request(self, request: LLMRequest, *, create: bool) -> pb.StepRequest:
        new_text = request.transcript if create else request.transcript[len(self._held_text):]
        step = pb.StepRequest(
            protocol_version=PROTOCOL_VERSION, context_id=self.context_id, client_key=self._client_key,
            create=create, action=_ACTIONS[request.action], new_text=new_text + request.candidate,
            stop=list(request.stop_strings), sampling=_sampling(request.sampling),
        )
        if request.action in (LLMAction.WRITE_STEP, LLMAction.WRITE_ANSWER):
            step.max_tokens = request.max_tokens
        if request.action == LLMAction.SCORE:
            step.score_bytes = len(request.candidate.encode("utf-8"))
        if create:
            step.messages.extend(pb.ChatMessage(role=m.role, content=m.content) for m in self.messages)
        else:
            view = self._held.view()
            step.base.length_bytes, step.base.digest = view.length_bytes, view.digest
        return step

    def _advance(self, request: LLMRequest, result: pb.StepResult, *, created: bool) -> None:
        """Move our view of the server's context to what it now holds, and check it agrees."""
        if created:
            self._held_text, self._held, self._created = "", TranscriptDigest(self._pairs()), True
        if request.action != LLMAction.SCORE:  # SCORE commits nothing
            appended = request.transcript[len(self._held_text):] + result.text
            self._held.extend(appended)
            self._held_text += appended
        view = self._held.view()
        if (result.state.length_bytes, result.state.digest) != (view.length_bytes, view.digest):
            # Should not happen; the next call re-creates the context rather than build on a doubt.
            log.warning("context %s: the server's state differs from ours after a call", self.context_id[:8])
            self._created = False


def build_infer_request(step: pb.StepRequest) -> service_pb2.ModelInferRequest:
    """The KServe request carrying one serialized StepRequest in the BYTES tensor REQUEST [1]."""
    payload = step.SerializeToString()
    infer = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    tensor = infer.inputs.add()
    tensor.name, tensor.datatype = REQUEST_TENSOR, "BYTES"
    tensor.shape.append(1)
    infer.raw_input_contents.append(_LENGTH_PREFIX.pack(len(payload)) + payload)
    return infer


def parse_infer_response(response: service_pb2.ModelInferResponse) -> pb.StepReply:
    """The StepReply in the REPLY tensor; CloudError when the response does not hold one."""
    names = [o.name for o in response.outputs]
    if REPLY_TENSOR not in names:
        raise CloudError(f"the response has no {REPLY_TENSOR} output (got {names}): is that {MODEL_NAME}?")
    index = names.index(REPLY_TENSOR)
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        (size,) = _LENGTH_PREFIX.unpack_from(raw)
        data = raw[_LENGTH_PREFIX.size:_LENGTH_PREFIX.size + size]
    else:
        data = response.outputs[index].contents.bytes_contents[0]
    return pb.StepReply.FromString(data)


def map_rpc_error(exc: grpc.RpcError, url: str) -> CloudError:
    """gRPC status -> the edge's error types (what the caller can do about it)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    if code == grpc.StatusCode.UNAVAILABLE and ("restricted" in details or "expecting header" in details):
        return NotAuthorizedError(
            f"the cloud at {url} rejected the edge token ({details}); "
            "set GLIMP_EDGE_TOKEN to the server's token"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return NotAuthorizedError(f"the cloud at {url} refused this client ({details})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return CloudRejectedError(f"the cloud rejected the request: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED):
        # NOT_FOUND: the model is unloaded or the server is shutting down ("no available versions").
        return CloudUnavailableError(f"the cloud at {url} is unavailable ({code.name}: {details})")
    return CloudError(f"the cloud call failed ({code.name if code else 'unknown'}: {details})")


def _open_channel(config: CloudLinkConfig) -> grpc.Channel:
    options: list[tuple[str, int | str]] = [
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", int(config.reconnect_backoff_max_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(config.reconnect_backoff_max_s * 1000)),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ]
    if config.tls_root_cert is None:
        return grpc.insecure_channel(config.url, options=options)
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=Path(config.tls_root_cert).read_bytes())
    return grpc.secure_channel(config.url, credentials, options=options)


def _sampling(params: SamplingParams) -> pb.Sampling:
    sampling = pb.Sampling(temperature=params.temperature, top_p=params.top_p)
    if params.seed is not None:
        sampling.seed = params.seed
    return sampling


def _reply(result: pb.StepResult, exchanges: list[Exchange], resync: Exchange | None) -> LLMReply:
    timings = [e.reply.result.timings for e in exchanges if e.reply.WhichOneof("outcome") == "result"]
    cost = CallCost(
        bytes_up=sum(e.bytes_up for e in exchanges), bytes_down=sum(e.bytes_down for e in exchanges),
        round_trip_s=sum(e.round_trip_s for e in exchanges),
        queue_s=sum(t.queue_s for t in timings), compute_s=sum(t.compute_s for t in timings),
        prefill_s=sum(t.prefill_s for t in timings), decode_s=sum(t.decode_s for t in timings),
        prefill_tokens=sum(t.prefill_tokens for t in timings),
        decode_tokens=sum(t.decode_tokens for t in timings),
        resync_bytes_up=resync.bytes_up if resync else 0, resync_s=resync.round_trip_s if resync else 0.0,
        resynced=resync is not None,
    )
    return LLMReply(
        text=result.text, stop_reason=_STOP_REASONS.get(result.stop_reason, "absorbed"),
        stop_string=result.stop_string or None, cost=cost,
        mean_logprob=result.mean_logprob if result.scored_tokens else None,
    )


