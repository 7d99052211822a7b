"""The KServe envelope of the edge/cloud contract: one StepRequest in, one StepReply out.

Triton's model `glimp_llm` takes a serialized `glimp.v1.StepRequest` in the BYTES tensor REQUEST
[1] and answers a `glimp.v1.StepReply` in REPLY; these two functions put it in and take it out.
"""

from __future__ import annotations

import struct

from tritonclient.grpc import service_pb2

from edge_client.errors import CloudError
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import MODEL_NAME, REPLY_TENSOR, REQUEST_TENSOR

_LENGTH_PREFIX = struct.Struct("<I")  # KServe raw BYTES: each element is a 4-byte length + data


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
