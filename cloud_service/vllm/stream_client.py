"""A client for the decoupled `glimp_llm` model: StepRequests over one ModelStreamInfer stream.

A decoupled model answers a unary ModelInfer with UNIMPLEMENTED, so every call goes over Triton's
bidirectional streaming RPC. One stream carries any number of calls in flight; each is tagged with
its own request id and its reply (one response, flagged final) is matched back by that id. The raw
gRPC stub is used rather than tritonclient's start_stream: tritonclient drops the request id of an
error response, so concurrent callers could not tell whose call failed.

Errors: the stream carries only an error *message* per response (no gRPC status code, no code
prefix in tritonserver 2.51); the model's message texts are the ONNX engine's, so a caller tells a
refusal (INVALID_ARG on the unary path) from a failure by the text only.
"""

from __future__ import annotations

import itertools
import queue
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from protos import edge_cloud_v1_pb2 as pb
from protos.contract import GRPC_AUTH_METADATA_KEY, MODEL_NAME, REPLY_TENSOR, REQUEST_TENSOR

_END = object()
PieceSink = Callable[[pb.StepPiece], None]


class StreamCallError(RuntimeError):
    """The model answered this call with an error (its message; see the module docstring)."""


class StreamClosed(RuntimeError):
    """The stream ended (server gone, deadline, cancel) before this call was answered."""


def request_message(step: pb.StepRequest, request_id: str) -> service_pb2.ModelInferRequest:
    data = step.SerializeToString()
    return service_pb2.ModelInferRequest(
        model_name=MODEL_NAME, id=request_id,
        inputs=[service_pb2.ModelInferRequest.InferInputTensor(
            name=REQUEST_TENSOR, datatype="BYTES", shape=[1])],
        raw_input_contents=[struct.pack("<I", len(data)) + data],
    )


def reply_of(response: service_pb2.ModelInferResponse) -> pb.StepReply:
    names = [o.name for o in response.outputs]
    raw = response.raw_output_contents[names.index(REPLY_TENSOR)]
    (size,) = struct.unpack_from("<I", raw)
    return pb.StepReply.FromString(raw[4:4 + size])


class StreamClient:
    """Thread-safe; `call` blocks until its reply, `submit` returns a Future."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float | None = None) -> None:
        self._channel = grpc.insecure_channel(url, options=[("grpc.max_receive_message_length", 64 << 20)])
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._pending: dict[str, tuple[Future[pb.StepReply], PieceSink | None]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        metadata = [(GRPC_AUTH_METADATA_KEY, token)] if token else None
        self._responses = stub.ModelStreamInfer(self._requests(), metadata=metadata, timeout=timeout_s)
        self._reader = threading.Thread(target=self._read, name="glimp-stream-reader", daemon=True)
        self._reader.start()

    def submit(self, step: pb.StepRequest, on_piece: PieceSink | None = None) -> Future[pb.StepReply]:
        """The call's final reply, as a Future; a streamed call's pieces go to `on_piece` first."""
        future: Future[pb.StepReply] = Future()
        request_id = f"s{next(self._ids)}"
        with self._lock:
            if self._reader is None or not self._reader.is_alive():
                future.set_exception(StreamClosed("the stream is closed"))
                return future
            self._pending[request_id] = (future, on_piece)
        self._outbox.put(request_message(step, request_id))
        return future

    def call(self, step: pb.StepRequest, timeout_s: float = 120.0,
             on_piece: PieceSink | None = None) -> pb.StepReply:
        return self.submit(step, on_piece).result(timeout_s)

    def close(self) -> None:
        """Half-close the stream, wait for the replies still due, close the channel."""
        self._outbox.put(_END)
        self._reader.join(10.0)
        self._channel.close()

    def cancel(self) -> None:
        """Cancel the stream now: calls in flight are cancelled on the server and fail here."""
        self._responses.cancel()
        self._outbox.put(_END)
        self._reader.join(10.0)
        self._channel.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _requests(self) -> Any:
        while True:
            item = self._outbox.get()
            if item is _END:
                return
            yield item

    def _read(self) -> None:
        error: BaseException = StreamClosed("the stream ended")
        try:
            for response in self._responses:
                self._deliver(response)
        except grpc.RpcError as exc:
            error = StreamClosed(f"the stream failed: {exc.code().name} {exc.details()}")
        finally:
            with self._lock:
                pending, self._pending = self._pending, {}
            for future, _ in pending.values():
                future.set_exception(error)

    def _deliver(self, response: service_pb2.ModelStreamInferResponse) -> None:
        request_id = response.infer_response.id
        reply = None if response.error_message else reply_of(response.infer_response)
        with self._lock:
            if reply is not None and reply.HasField("piece"):  # not final: the call stays pending
                _, on_piece = self._pending.get(request_id, (None, None))
            else:
                future, _ = self._pending.pop(request_id, (None, None))
        if reply is not None and reply.HasField("piece"):
            if on_piece is not None:
                on_piece(reply.piece)
        elif future is None:
            return  # an empty final response of an already answered call
        elif reply is None:
            future.set_exception(StreamCallError(response.error_message))
        else:
            future.set_result(reply)
