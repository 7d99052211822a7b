"""A readiness check worth trusting: one real tiny inference through the contract.

Health endpoints say READY even when the model's stub process is dead, so readiness here means
a real call: create a context, write one greedy token, close it. It goes through the stock
`tritonclient.grpc` client (the edge uses its own lean gRPC code), which also shows the service
works with NVIDIA's standard client.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

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
            reply = _call(grpcclient, client, write, target, timeout_s)
            if reply.WhichOneof("outcome") != "result" or reply.result.timings.decode_tokens != 1:
                raise ReadinessError(f"the readiness write got an unexpected reply: {reply}")
            _call(grpcclient, client, close, target, timeout_s)
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


def _call(grpcclient, client, request: pb.StepRequest, target: ReadinessTarget,  # type: ignore[no-untyped-def]
          timeout_s: float) -> pb.StepReply:
    tensor = grpcclient.InferInput(REQUEST_TENSOR, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([request.SerializeToString()], dtype=np.object_))
    headers = {GRPC_METADATA_KEY: target.token} if target.token else None
    result = client.infer(MODEL_NAME, [tensor], headers=headers, client_timeout=timeout_s)
    return pb.StepReply.FromString(result.as_numpy(REPLY_TENSOR).reshape(-1)[0])
