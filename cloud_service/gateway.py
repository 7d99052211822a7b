"""`Gateway`: the one gRPC port edges reach, in front of a tritonserver on a private unix socket.

Why a front at all (issue 12):
- tritonserver 2.51 (the binary in nvidia-pytriton) dies with SIGFPE when a request asks for
  classification of a BYTES output: its gRPC frontend divides the output's byte size by the
  element size, 0 for BYTES (fixed upstream in server#8267, 2.59+). That happens after the
  model answered, and the python backend never shows a model the option, so no model code can
  refuse it: the request has to be stopped before it reaches the server.
- No secret on the server's argv: the edge token is checked here, in this process's memory, and
  the server listens on a unix socket inside a 0700 directory, so other local users cannot
  connect to it at all (the repository API needs no admin token there, and edges never reach it:
  only the methods in `_FORWARDED` pass, every other one is UNIMPLEMENTED on this port).

Requests and replies pass through as raw bytes (parsed once to be checked, never re-encoded).
A token rejection mirrors Triton's own (UNAVAILABLE, "This protocol is restricted, expecting
header ..."), so an edge sees exactly what it saw when Triton checked the token itself.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from cloud_service.errors import ServerStartError
from cloud_service.security import GRPC_METADATA_KEY, TLSFiles
from cloud_service.server_flags import KEEPALIVE_OPTIONS
from protos.contract import MAX_REQUEST_TEXT_BYTES

log = logging.getLogger(__name__)

_SERVICE = "/inference.GRPCInferenceService/"
_OPEN = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")  # as Triton had them
_INFER, _STREAM = "ModelInfer", "ModelStreamInfer"
_FORWARDED = (*_OPEN, _INFER)
# Output/input parameters this service never needs; classification crashes 2.51 (see above), and
# shared memory is registered through a protocol that is not forwarded anyway.
REFUSED_PARAMETERS = {
    "classification": "classification of glimp_llm's BYTES output is not supported (it would crash "
                      "tritonserver 2.51); request REPLY without class_count",
    "shared_memory_region": "shared-memory tensors are not served on this port; send the data in the request",
}
# Far above the contract's text limit, so an oversized request reaches the model and gets its
# INVALID_ARG naming the limit (gRPC's own RESOURCE_EXHAUSTED would look like an outage to an edge).
_MAX_MESSAGE_BYTES = 64 * MAX_REQUEST_TEXT_BYTES
_RESTRICTED = f"This protocol is restricted, expecting header '{GRPC_METADATA_KEY}'"


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and what it forwards to."""

    listen: str  # host:port edges connect to
    upstream: str  # the server's gRPC target, e.g. unix:/run/dir/triton.sock:0
    token: str | None = field(default=None, repr=False)  # None: inference is open
    tls: TLSFiles | None = None
    max_workers: int = 64  # concurrent calls in flight through the gateway


class Gateway:
    """A gRPC server forwarding the allowed KServe methods to `upstream` after checking them."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.healthy = threading.Event()  # cleared by a supervisor while it heals the server
        self.healthy.set()
        self.refused = 0  # requests stopped here (bad token, refused parameter)
        self._channel = grpc.insecure_channel(config.upstream, options=_message_options())
        # No BDP probe pings toward edges: on a slow link each costs bytes the edge does not expect.
        # No port sharing: a second gateway on a busy port must fail to start, not split its clients.
        options = [*_message_options(), *KEEPALIVE_OPTIONS,
                   ("grpc.http2.bdp_probe", 0), ("grpc.so_reuseport", 0)]
        self._server = grpc.server(futures.ThreadPoolExecutor(config.max_workers, "glimp-gateway"),
                                   options=options)
        self._server.add_generic_rpc_handlers([_Handlers(self)])
        self._bound = False

    def start(self) -> None:
        """Bind and serve; ServerStartError when the listen address cannot be bound."""
        cfg = self.config
        try:
            if cfg.tls is not None:
                creds = grpc.ssl_server_credentials([(cfg.tls.key.read_bytes(), cfg.tls.cert.read_bytes())])
                port = self._server.add_secure_port(cfg.listen, creds)
            else:
                port = self._server.add_insecure_port(cfg.listen)
        except RuntimeError:  # grpcio raises where older releases returned 0
            port = 0
        if port == 0:
            raise ServerStartError(f"cannot listen on {cfg.listen}: the port is in use or the address "
                                   "is not this machine's; choose another --grpc-port / --host")
        self._server.start()
        self._bound = True
        log.info("gateway on %s forwarding to %s", cfg.listen, cfg.upstream)

    def stop(self, grace_s: float = 1.0) -> None:
        if self._bound:
            self._server.stop(grace_s).wait()
            self._bound = False
        self._channel.close()

    def authorized(self, context: grpc.ServicerContext) -> bool:
        if self.config.token is None:
            return True
        sent = dict(context.invocation_metadata()).get(GRPC_METADATA_KEY, "")
        return hmac.compare_digest(str(sent).encode(), self.config.token.encode())

    def unary(self, method: str) -> Callable[..., Any]:
        return self._channel.unary_unary(_SERVICE + method)

    def stream(self) -> Callable[..., Any]:
        return self._channel.stream_stream(_SERVICE + _STREAM)


def refused_parameter(raw: bytes) -> str | None:
    """Why a serialized ModelInferRequest is refused before the server sees it, or None."""
    try:
        request = service_pb2.ModelInferRequest.FromString(raw)
    except DecodeError:
        return "the request is not a serialized inference.ModelInferRequest"
    for tensor in [*request.outputs, *request.inputs]:
        for name in tensor.parameters:
            if name in REFUSED_PARAMETERS:
                return f"{tensor.name}: {REFUSED_PARAMETERS[name]}"
    return None


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = str(details.method)
        if not method.startswith(_SERVICE):
            return None
        name = method[len(_SERVICE):]
        if name == _STREAM:
            return grpc.stream_stream_rpc_method_handler(self._stream)
        if name in _FORWARDED:
            return grpc.unary_unary_rpc_method_handler(self._unary(name))
        return None  # UNIMPLEMENTED: the repository, config, statistics, ... APIs are not on this port

    def _unary(self, name: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        forward = self._gateway.unary(name)

        def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
            if name in ("ServerReady", "ModelReady") and not self._gateway.healthy.is_set():
                ready = service_pb2.ServerReadyResponse if name == "ServerReady" else \
                    service_pb2.ModelReadyResponse
                return bytes(ready(ready=False).SerializeToString())
            if name == _INFER:
                self._check(raw, context)
            try:
                return bytes(forward(raw, timeout=context.time_remaining()))
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details() or "")
                raise  # unreachable: abort raises

        return handle

    def _stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._authorize(context)
        refused: list[str] = []

        def checked() -> Iterator[bytes]:
            try:
                for raw in requests:
                    why = refused_parameter(raw)
                    if why is not None:
                        refused.append(why)
                        return  # half-close: the server finishes what it has, then the stream is refused
                    yield raw
            except grpc.RpcError:
                return  # the edge's call ended while we waited for its next request: nothing more to send

        call = self._gateway.stream()(checked(), timeout=context.time_remaining())
        context.add_callback(call.cancel)
        try:
            yield from call
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details() or "")
        if refused:
            self._gateway.refused += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])

    def _check(self, raw: bytes, context: grpc.ServicerContext) -> None:
        self._authorize(context)
        why = refused_parameter(raw)
        if why is not None:
            self._gateway.refused += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)

    def _authorize(self, context: grpc.ServicerContext) -> None:
        if not self._gateway.authorized(context):
            self._gateway.refused += 1
            context.abort(grpc.StatusCode.UNAVAILABLE, _RESTRICTED)


def _message_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
