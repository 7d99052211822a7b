"""What a cloud link puts on the wire: counted per call by a gRPC client interceptor, framing estimated.

The trace counts serialized messages (`CallCost.bytes_*`), which is what the production link
measures. To check those counts against what a link emulator sees cross the wire, `WireCounter`
sits on the link's channels (`WireCounter.link(config)`, or `TritonLink(config,
interceptors=[counter], on_channel=counter.watch)`) and adds up, for every call that got a reply,
the messages and an estimate of the HTTP/2 + gRPC bytes around them (`GrpcFraming`), plus the
bytes of every new connection.
"""

from __future__ import annotations

import gzip
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from edge_client.link.transport import CloudLinkConfig, TritonLink

_HTTP2_FRAME_BYTES = 16384  # SETTINGS_MAX_FRAME_SIZE default: larger messages span several DATA frames


@dataclass(frozen=True)
class GrpcFraming:
    """HTTP/2 + gRPC bytes around the messages of unary calls: what the wire adds to the trace's count.

    The trace counts serialized messages (`CallCost.bytes_*`). On the wire each call also has a
    5-byte gRPC prefix and a 9-byte DATA frame header per 16 KiB frame; a HEADERS frame, in which
    HPACK indexes the fields it has seen, but gRPC sends custom metadata (the edge token) as a
    literal on every call; the reply's headers and trailers; and WINDOW_UPDATE frames. Each new
    connection adds the preface, SETTINGS, BDP pings and the first, unindexed header blocks.
    Sizes measured with grpcio 1.85 against tritonserver 2.51 through a frame-parsing proxy, then
    behind the launcher's gateway (a Python gRPC server, cloud_service/gateway.py): its trailers
    carry an empty `grpc-message` literal on every call (15 bytes), which Triton's C++ omits.
    """

    request_headers_bytes: int = 18  # HEADERS frame header + indexed fields + the grpc-timeout literal
    response_headers_bytes: int = 37  # response HEADERS + trailers (grpc-status, empty grpc-message)
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
    """Everything a link exchanged, health pings and closes included."""

    calls: int  # gRPC calls that got a reply
    bytes_up: int  # serialized messages, as the trace counts them
    bytes_down: int
    connections: int  # times a channel became ready (a new TCP + HTTP/2 connection)
    wire_up_bytes: int  # estimated wire bytes (GrpcFraming, gzip applied as gRPC does)
    wire_down_bytes: int


class WireCounter(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """A gRPC client interceptor that counts every unary call's bytes; `totals` reads them. Thread-safe."""

    def __init__(self, framing: GrpcFraming | None = None) -> None:
        self.framing = framing or GrpcFraming()
        self._lock = threading.Lock()
        self._totals = LinkTotals(0, 0, 0, 0, 0, 0)

    def link(self, config: CloudLinkConfig) -> TritonLink:
        """A `TritonLink` whose every channel (renewed ones included) this counter watches."""
        return TritonLink(config, interceptors=[self], on_channel=self.watch)

    @property
    def totals(self) -> LinkTotals:
        with self._lock:
            return self._totals

    def watch(self, channel: grpc.Channel) -> None:
        """Count the connections `channel` makes (each time it becomes ready)."""
        channel.subscribe(self._on_state)

    def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], client_call_details: Any,
                              request: Any) -> Any:
        outcome = continuation(client_call_details, request)
        try:
            response = outcome.result()
        except grpc.RpcError:
            return outcome  # no reply: nothing counted, the caller sees the error
        up, down = request.ByteSize(), response.ByteSize()
        gzipped = client_call_details.compression == grpc.Compression.Gzip
        metadata = tuple(client_call_details.metadata or ())
        wire_up = self.framing.request_bytes(_sent_bytes(request, up, gzipped), metadata)
        wire_down = self.framing.response_bytes(down)
        with self._lock:
            was = self._totals
            self._totals = replace(
                was, calls=was.calls + 1, bytes_up=was.bytes_up + up, bytes_down=was.bytes_down + down,
                wire_up_bytes=was.wire_up_bytes + wire_up, wire_down_bytes=was.wire_down_bytes + wire_down,
            )
        return outcome

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        if state != grpc.ChannelConnectivity.READY:
            return
        with self._lock:
            was = self._totals
            self._totals = replace(was, connections=was.connections + 1,
                                   wire_up_bytes=was.wire_up_bytes + self.framing.connection_up_bytes,
                                   wire_down_bytes=was.wire_down_bytes + self.framing.connection_down_bytes)


def _sent_bytes(request: Any, size: int, gzipped: bool) -> int:
    if not gzipped:
        return size
    # gRPC sends the gzip form (level 6, as zlib's default) only when it is smaller.
    return min(size, len(gzip.compress(request.SerializeToString(), compresslevel=6, mtime=0)))
