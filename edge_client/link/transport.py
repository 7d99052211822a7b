"""The transport: where the cloud is, one gRPC channel to it, one raw KServe call, its errors.

`TritonLink` owns the channel and the generated stub. Every call has a deadline, the edge token
travels as the metadata Triton's restricted protocol checks, the context id travels as
`x-glimp-context` (a balancer hashes on it to keep a context on one replica), and bytes up/down
are exactly the serialized gRPC messages (`ByteSize()`). No retries here:
`edge_client.link.resilient` adds them. Per-call cross-cutting work (the benchmark's wire-byte
count) plugs in as gRPC client interceptors, which every channel of the link (`renew` included)
is wrapped in.
"""

from __future__ import annotations

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
    bytes_down: int  # serialized ModelInferResponse
    round_trip_s: float


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
        self._channel, self._stub = self._connect()

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None) -> Exchange:
        """Send one StepRequest; map gRPC failures to `edge_client.errors`."""
        infer = build_infer_request(request)
        started = time.perf_counter()
        response = self.send_infer(infer, timeout_s, context_id=request.context_id)
        elapsed = time.perf_counter() - started
        return Exchange(parse_infer_response(response), infer.ByteSize(), response.ByteSize(), elapsed)

    def send_infer(self, infer: service_pb2.ModelInferRequest, timeout_s: float | None = None, *,
                   context_id: str = "") -> service_pb2.ModelInferResponse:
        """One raw KServe ModelInfer call with the deadline, token and compression of this link.

        `context_id` goes out as the `x-glimp-context` header (the balancer's hash key) when set.
        """
        stub = self._stub  # the channel of this call, even if `renew` swaps it meanwhile
        metadata = self._metadata + (((CONTEXT_METADATA_KEY, context_id),) if context_id else ())
        try:
            response: service_pb2.ModelInferResponse = stub.ModelInfer(
                infer, timeout=timeout_s or self.config.timeout_s, metadata=metadata,
                compression=grpc.Compression.Gzip if self.config.gzip else None,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self.config.url) from exc
        return response

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
