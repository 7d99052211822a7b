"""The transport: where the cloud is, one gRPC channel to it, one raw KServe call, its errors.

`TritonLink` owns the channel and the generated stub. Every call has a deadline, the edge token
travels as the metadata Triton's restricted protocol checks, the context id travels as
`x-glimp-context` (a balancer hashes on it to keep a context on one replica), and bytes up/down
are exactly the serialized gRPC messages (`ByteSize()`). A decoupled model (the vLLM engine)
refuses unary ModelInfer with UNIMPLEMENTED: the link then switches to Triton's streaming RPC,
one short stream per call (the refused call never reached the model, so it is sent again), and
stays on it. Over the stream a version-2 refusal comes in band (StepReply.refused, with the
status code a unary call would have had), and a streamed write's pieces arrive before its reply
(`on_piece`); `Exchange.first_text_s` is when the first text arrived. No retries here:
`edge_client.link.resilient` adds them. Per-call cross-cutting work (the benchmark's wire-byte
count) plugs in as gRPC client interceptors, which every channel of the link (`renew` included)
is wrapped in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    NotAuthorizedError,
)
from edge_client.link.kserve import build_infer_request, parse_infer_response
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import CONTEXT_METADATA_KEY, GRPC_AUTH_METADATA_KEY

log = logging.getLogger(__name__)
PieceSink = Callable[[pb.StepPiece], None]  # shown each streamed piece of a write, as it arrives
TOKEN_METADATA_KEY = GRPC_AUTH_METADATA_KEY  # Triton's restricted-protocol header
_MAX_MESSAGE_BYTES = 64 << 20


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
    bytes_down: int  # serialized ModelInferResponse(s) (every streamed response, pieces included)
    round_trip_s: float
    first_text_s: float  # until the first text arrived: the first piece, else the reply


class TritonLink:
    """The channel, stub and one raw call: everything the conversations and the retry layer reuse.

    `interceptors` (gRPC client interceptors) wrap every channel the link opens, and
    `on_channel` is shown each new channel (to watch its connectivity). `renew()`
    carries on over a fresh channel: gRPC backs off between attempts to reconnect to a server
    that refused connections (1 s, growing), so a channel that lived through a long outage can
    find a returning cloud only many seconds after it is back; the health monitor asks on a
    fresh one, and once that succeeds the connected channel carries the calls that follow.
    """

    def __init__(self, config: CloudLinkConfig, *,
                 interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
                 on_channel: Callable[[grpc.Channel], None] | None = None) -> None:
        self.config = config
        self.interceptors = tuple(interceptors)
        self._on_channel = on_channel
        self._metadata = ((TOKEN_METADATA_KEY, config.token),) if config.token else ()
        self.streamed = False  # set once the model turned out decoupled (see the module docstring)
        self._channel, self._stub = self._connect()

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None,
                 on_piece: PieceSink | None = None) -> Exchange:
        """Send one StepRequest; map gRPC failures to `edge_client.errors`.

        A refusal in band raises the error its status code maps to, as a unary refusal does.
        """
        infer = build_infer_request(request)
        if not self.streamed:
            started = time.perf_counter()
            try:
                response = self.send_infer(infer, timeout_s, context_id=request.context_id)
            except DecoupledModel:
                log.info("%s serves a decoupled model: calls go over ModelStreamInfer", self.config.url)
                self.streamed = True
            else:
                elapsed = time.perf_counter() - started
                reply = _checked(parse_infer_response(response), self.config.url)
                return Exchange(reply, infer.ByteSize(), response.ByteSize(), elapsed, elapsed)
        return self._exchange_streamed(infer, timeout_s, request.context_id, on_piece)

    def _exchange_streamed(self, infer: service_pb2.ModelInferRequest, timeout_s: float | None,
                           context_id: str, on_piece: PieceSink | None) -> Exchange:
        """One call over its own ModelStreamInfer stream: pieces (if any), then the final reply."""
        stub = self._stub
        started = time.perf_counter()
        first_text_s, bytes_down, final = None, 0, None
        try:
            for response in stub.ModelStreamInfer(iter([infer]), timeout=timeout_s or self.config.timeout_s,
                                                  metadata=self._call_metadata(context_id),
                                                  compression=self._compression()):
                bytes_down += response.ByteSize()
                if response.error_message:  # Triton itself failed the call (the model refuses in band)
                    raise CloudUnavailableError(f"the cloud at {self.config.url} failed the call: "
                                                f"{response.error_message}")
                reply = parse_infer_response(response.infer_response)
                first_text_s = first_text_s or time.perf_counter() - started
                if reply.HasField("piece"):
                    if on_piece is not None:
                        on_piece(reply.piece)
                else:
                    final = reply
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.config.url) from exc
        elapsed = time.perf_counter() - started
        if final is None:
            raise CloudUnavailableError(f"the cloud at {self.config.url} ended the stream without a reply")
        return Exchange(_checked(final, self.config.url), infer.ByteSize(), bytes_down, elapsed,
                        first_text_s or elapsed)

    def send_infer(self, infer: service_pb2.ModelInferRequest, timeout_s: float | None = None, *,
                   context_id: str = "") -> service_pb2.ModelInferResponse:
        """One raw KServe ModelInfer call with the deadline, token and compression of this link.

        `context_id` goes out as the `x-glimp-context` header (the balancer's hash key) when set.
        """
        stub = self._stub  # the channel of this call, even if `renew` swaps it meanwhile
        try:
            response: service_pb2.ModelInferResponse = stub.ModelInfer(
                infer, timeout=timeout_s or self.config.timeout_s, metadata=self._call_metadata(context_id),
                compression=self._compression(),
            )
        except grpc.RpcError as exc:
            if _is_decoupled_refusal(exc):
                raise DecoupledModel(str(exc.details())) from exc
            raise map_rpc_error(exc, self.config.url) from exc
        return response

    def _call_metadata(self, context_id: str) -> tuple[tuple[str, str], ...]:
        return self._metadata + (((CONTEXT_METADATA_KEY, context_id),) if context_id else ())

    def _compression(self) -> grpc.Compression | None:
        return grpc.Compression.Gzip if self.config.gzip else None

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel (to watch its connectivity: `channel.subscribe(callback)`)."""
        return self._channel

    def renew(self) -> None:
        """Carry on over a new channel; calls still on the old one are cancelled."""
        old = self._channel
        self._channel, self._stub = self._connect()
        old.close()

    def close(self) -> None:
        self._channel.close()

    def _connect(self) -> tuple[grpc.Channel, service_pb2_grpc.GRPCInferenceServiceStub]:
        channel = open_channel(self.config)
        if self._on_channel is not None:
            self._on_channel(channel)
        if self.interceptors:
            channel = grpc.intercept_channel(channel, *self.interceptors)
        return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def open_channel(config: CloudLinkConfig) -> grpc.Channel:
    """A channel with the link's keepalive, reconnect back-off, message limits and TLS."""
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


class DecoupledModel(CloudError):
    """The model answers over ModelStreamInfer only (unary ModelInfer is UNIMPLEMENTED for it)."""


def _is_decoupled_refusal(exc: grpc.RpcError) -> bool:
    code = exc.code() if hasattr(exc, "code") else None
    return code == grpc.StatusCode.UNIMPLEMENTED and "decoupled" in str(exc.details() or "")


def _checked(reply: pb.StepReply, url: str) -> pb.StepReply:
    """The reply, or the error its in-band refusal maps to (the same as the unary status would)."""
    if reply.WhichOneof("outcome") != "refused":
        return reply
    codes = {code.value[0]: code for code in grpc.StatusCode}
    raise map_status(codes.get(reply.refused.grpc_code, grpc.StatusCode.UNKNOWN), reply.refused.message, url)


def map_rpc_error(exc: grpc.RpcError, url: str) -> CloudError:
    """gRPC status -> the edge's error types (what the caller can do about it)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    return map_status(code, details, url)


def map_status(code: grpc.StatusCode | None, details: str, url: str) -> CloudError:
    """A status code and its message -> the edge's error types."""
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
