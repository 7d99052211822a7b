"""A readiness check worth trusting: one real tiny inference through the contract.

Health endpoints say READY even when the model's stub process is dead, so readiness here means
a real call: create a context, write one greedy token, close it. It goes through the stock
`tritonclient.grpc` client (the edge uses its own lean gRPC code), which also shows the service
works with NVIDIA's standard client: unary `infer`, or its stream API for a decoupled model (the
vLLM engine), which refuses unary calls.
"""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_service.security import GRPC_METADATA_KEY
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import MODEL_NAME, PROTOCOL_VERSION, REPLY_TENSOR, REQUEST_TENSOR


@dataclass(frozen=True)
class ReadinessTarget:
    """Where and how to reach the server."""

    url: str  # host:port of the gRPC endpoint
    token: str | None = field(default=None, repr=False)
    tls_root_cert: Path | None = None  # set: use TLS, trusting this PEM
    tls_server_name: str | None = None  # name the certificate was issued for, if not the url's host
    streamed: bool = False  # a decoupled model: call over ModelStreamInfer


class ReadinessError(Exception):
    """The readiness call failed (the server is not ready, or the reply made no sense)."""


def check_ready(target: ReadinessTarget, timeout_s: float) -> float:
    """Run create + 1-token write + close; return the seconds it took. Raises ReadinessError."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    started = time.perf_counter()
    key, context_id = uuid.uuid4().bytes + uuid.uuid4().bytes, uuid.uuid4().hex
    write = pb.StepRequest(
        protocol_version=PROTOCOL_VERSION, context_id=context_id, client_key=key, create=True,
        messages=[pb.ChatMessage(role="user", content="ping")], action=pb.WRITE_STEP, max_tokens=1,
    )
    close = pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=context_id, client_key=key,
                           action=pb.CLOSE)
    try:
        with _client(grpcclient, target) as client:
            calls = _Calls(grpcclient, client, target, timeout_s)
            try:
                reply = calls.call(write)
                if reply.WhichOneof("outcome") != "result" or reply.result.timings.decode_tokens != 1:
                    raise ReadinessError(f"the readiness write got an unexpected reply: {reply}")
                calls.call(close)
            finally:
                calls.end()
    except InferenceServerException as exc:
        raise ReadinessError(str(exc)) from exc
    return time.perf_counter() - started


def _client(grpcclient, target: ReadinessTarget):  # type: ignore[no-untyped-def]
    channel_args = None
    if target.tls_server_name:
        channel_args = [("grpc.ssl_target_name_override", target.tls_server_name)]
    return grpcclient.InferenceServerClient(
        target.url, ssl=target.tls_root_cert is not None,
        root_certificates=str(target.tls_root_cert) if target.tls_root_cert else None,
        channel_args=channel_args,
    )


class _Calls:
    """One StepRequest at a time: unary `infer`, or over one stream for a decoupled model."""

    def __init__(self, grpcclient, client, target: ReadinessTarget,  # type: ignore[no-untyped-def]
                 timeout_s: float) -> None:
        self._grpcclient, self._client, self._timeout_s = grpcclient, client, timeout_s
        self._streamed = target.streamed
        self._headers = {GRPC_METADATA_KEY: target.token} if target.token else None
        self._answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        if self._streamed:
            client.start_stream(lambda result, error: self._answers.put((result, error)),
                                stream_timeout=timeout_s, headers=self._headers)

    def call(self, request: pb.StepRequest) -> pb.StepReply:
        tensor = self._grpcclient.InferInput(REQUEST_TENSOR, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([request.SerializeToString()], dtype=np.object_))
        if not self._streamed:
            result = self._client.infer(MODEL_NAME, [tensor], headers=self._headers,
                                        client_timeout=self._timeout_s)
        else:
            self._client.async_stream_infer(MODEL_NAME, [tensor])
            try:
                result, error = self._answers.get(timeout=self._timeout_s)
            except queue.Empty:
                raise ReadinessError(f"no reply on the stream within {self._timeout_s:.1f} s") from None
            if error is not None:
                raise ReadinessError(str(error))
        return pb.StepReply.FromString(result.as_numpy(REPLY_TENSOR).reshape(-1)[0])

    def end(self) -> None:
        if self._streamed:  # cancel: a server that stopped answering must not hold the check
            self._client.stop_stream(cancel_requests=True)
