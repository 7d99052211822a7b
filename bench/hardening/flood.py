"""Every KServe request option an attacker can set, sent in bulk at a real server (issue 12).

`families()` builds one malformed or unusual `ModelInferRequest` per kind and option value:
classification (which killed tritonserver 2.51), request parameters, priority, timeout, sequence
flags, shared-memory tensors, binary_data, output lists, wrong datatypes and shapes, huge shapes,
BYTES with bad length prefixes, unknown models, garbage envelopes, and the same over the
streaming RPC. `flood()` sends them round-robin from several threads and counts the answers by
gRPC status; `python -m bench.hardening.flood_run` runs it against a fresh server while a greedy
session runs beside it.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2

from edge_client.link import build_infer_request
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import GRPC_AUTH_METADATA_KEY, MODEL_NAME, REPLY_TENSOR, REQUEST_TENSOR

_SERVICE = "/inference.GRPCInferenceService/"
Mutation = Callable[[service_pb2.ModelInferRequest], None]


@dataclass(frozen=True)
class Case:
    """One request of one family: its serialized envelope and the RPC it goes through."""

    family: str
    payload: bytes
    streaming: bool = False


@dataclass
class FloodResult:
    """What came back, by family and gRPC status name."""

    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    by_family: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, family: str, status: str) -> None:
        self.sent += 1
        self.statuses[status] += 1
        self.by_family.setdefault(family, Counter())[status] += 1


def valid_step() -> pb.StepRequest:
    """A well-formed create + 1-token write (so a request that slips through really runs the model)."""
    return pb.StepRequest(
        protocol_version=1, context_id=secrets.token_hex(16), client_key=os.urandom(32), create=True,
        messages=[pb.ChatMessage(role="user", content="ping")], action=pb.WRITE_STEP, max_tokens=1,
    )


def _param(request: service_pb2.ModelInferRequest, key: str, value: object) -> None:
    p = request.parameters[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        if value < 2**63:
            p.int64_param = value  # what tritonclient sends for an int (classification reads int64)
        else:
            p.uint64_param = value
    else:
        p.string_param = str(value)


def _out_param(key: str, value: object, name: str = REPLY_TENSOR) -> Mutation:
    def mutate(request: service_pb2.ModelInferRequest) -> None:
        out = request.outputs.add()
        out.name = name
        _param(out, key, value)  # type: ignore[arg-type]  # same parameters map shape

    return mutate


def _req_param(key: str, value: object) -> Mutation:
    return lambda request: _param(request, key, value)


def _prefix(value: bytes) -> Mutation:
    def mutate(request: service_pb2.ModelInferRequest) -> None:
        request.raw_input_contents[0] = value

    return mutate


def _shape(*dims: int) -> Mutation:
    def mutate(request: service_pb2.ModelInferRequest) -> None:
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(dims)

    return mutate


def _datatype(name: str) -> Mutation:
    def mutate(request: service_pb2.ModelInferRequest) -> None:
        request.inputs[0].datatype = name

    return mutate


def _outputs(*names: str) -> Mutation:
    def mutate(request: service_pb2.ModelInferRequest) -> None:
        for name in names:
            request.outputs.add().name = name

    return mutate


def _set(attr: str, value: str) -> Mutation:
    return lambda request: setattr(request, attr, value)


def _typed_contents(request: service_pb2.ModelInferRequest) -> None:
    request.inputs[0].contents.bytes_contents.append(b"both raw and typed")


def _input_shm(request: service_pb2.ModelInferRequest) -> None:
    p = request.inputs[0].parameters
    p["shared_memory_region"].string_param = "someone_elses_region"
    p["shared_memory_byte_size"].int64_param = 1 << 20


def _second_input(request: service_pb2.ModelInferRequest) -> None:
    extra = request.inputs.add()
    extra.name, extra.datatype = "EXTRA", "BYTES"
    extra.shape.append(1)
    request.raw_input_contents.append(struct.pack("<I", 1) + b"x")


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


MUTATIONS: dict[str, list[Mutation]] = {
    "classification": [_out_param("classification", n) for n in (0, 1, 3, 2**31, 2**32 - 1)],
    "parameters": [_req_param(k, v) for k, v in (
        ("context_id", "x" * 4096), ("custom", -(2**63)), ("custom", 2**64 - 1), ("x" * 1000, True),
        ("headers", "evil"), ("binary_data_output", True), ("triton_enable_empty_final_response", True),
        ("", ""), ("max_tokens", "9999999"), ("\x00\xff", "\x00"),
    )],
    "priority": [_req_param("priority", v) for v in (0, 1, 2, 2**63, 2**64 - 1, -1, "high")],
    "timeout": [_req_param("timeout", v) for v in (1, 0, 2**63, -1, "soon")],
    "sequence": [_req_param(k, v) for k, v in (
        ("sequence_id", 1), ("sequence_id", 2**64 - 1), ("sequence_id", "abc"), ("sequence_start", True),
        ("sequence_end", True), ("sequence_id", -5),
    )],
    "shared_memory": [_out_param("shared_memory_region", "nope"), _out_param("shared_memory_byte_size", 64),
                      _out_param("shared_memory_offset", 2**40), _input_shm],
    "binary_data": [_out_param("binary_data", v) for v in (False, True, "yes", 7)],
    "outputs": [_outputs("NOPE"), _outputs(REPLY_TENSOR, REPLY_TENSOR), _outputs(REQUEST_TENSOR),
                _outputs(*[f"O{i}" for i in range(64)]), _outputs("")],
    "datatypes": [_datatype(name)
                  for name in ("INT32", "FP32", "BOOL", "FP16", "UINT64", "STRING", "", "BF16")],
    "shapes": [_shape(), _shape(2), _shape(0), _shape(1, 1), _shape(-1), _shape(1, 1, 1, 1, 1, 1, 1, 1)],
    "huge_shapes": [_shape(2**40), _shape(2**62), _shape(2**31, 2**31), _shape(2**63 - 1)],
    "bytes_prefix": [_prefix(v) for v in (
        b"", b"\x01", _u32(2**32 - 1) + b"abc", _u32(100) + b"short", _u32(0), _u32(3) + b"abcdef",
        _u32(1) + b"x" + _u32(2**31), b"\xff" * 64,
    )],
    "envelope": [_set("model_name", "nope"), _set("model_name", ""), _set("model_version", "999"),
                 _set("model_version", "-1"), _typed_contents, _second_input, _set("id", "x" * 100_000)],
}


def families() -> list[Case]:
    """Every mutation as a unary case, every one also as a streaming case, plus raw garbage."""
    cases: list[Case] = []
    for family, mutations in MUTATIONS.items():
        for mutate in mutations:
            request = build_infer_request(valid_step())
            mutate(request)
            payload = request.SerializeToString()
            cases += [Case(family, payload), Case(f"stream:{family}", payload, streaming=True)]
    cases += [Case("garbage", os.urandom(n)) for n in (1, 7, 64, 4096)]
    return cases


def flood(target: str, token: str, total: int, *, threads: int = 8, timeout_s: float = 10.0) -> FloodResult:
    """Send `total` cases round-robin over `threads` threads at `target`; count the answers."""
    cases = families()
    result = FloodResult()
    metadata = ((GRPC_AUTH_METADATA_KEY, token),)
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                ("grpc.max_send_message_length", 64 << 20)]) as channel:
        unary = channel.unary_unary(_SERVICE + "ModelInfer")
        stream = channel.stream_stream(_SERVICE + "ModelStreamInfer")

        def send(case: Case) -> tuple[str, str]:
            try:
                if case.streaming:
                    for reply in stream(iter([case.payload]), metadata=metadata, timeout=timeout_s):
                        error = service_pb2.ModelStreamInferResponse.FromString(reply).error_message
                        return case.family, "STREAM_ERROR" if error else "OK"
                    return case.family, "OK"
                unary(case.payload, metadata=metadata, timeout=timeout_s)
                return case.family, "OK"
            except grpc.RpcError as exc:
                return case.family, exc.code().name

        with ThreadPoolExecutor(threads) as pool:
            for family, status in pool.map(send, _round_robin(cases, total)):
                result.add(family, status)
    return result


def _round_robin(cases: list[Case], total: int) -> Iterator[Case]:
    for i in range(total):
        yield cases[i % len(cases)]


__all__ = ["MODEL_NAME", "Case", "FloodResult", "families", "flood", "valid_step"]
