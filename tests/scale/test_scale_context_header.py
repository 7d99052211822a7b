"""Every call of a conversation carries its context id as the `x-glimp-context` header, and only that.

A real gRPC server in process (the KServe servicer, recording each call's metadata) stands in for
Triton: the test is about what the edge puts on the wire, which the real servers do not report.
It keeps contexts the way the contract says (digest per context id), so the delta, the mismatch
-> full resend and the close paths all run.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import CONTEXT_METADATA_KEY, REPLY_TENSOR, TranscriptDigest, transcript_state

_PREFIX = struct.Struct("<I")


class _RecordingReplica(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Holds each context's digest, answers "x" to every write, records (action, metadata) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, str]]] = []
        self.contexts: dict[str, TranscriptDigest] = {}

    def forget_all(self) -> None:  # as a replica that never saw these contexts
        self.contexts.clear()

    def ModelInfer(self, request: service_pb2.ModelInferRequest, context: grpc.ServicerContext
                   ) -> service_pb2.ModelInferResponse:
        raw = request.raw_input_contents[0]
        step = pb.StepRequest.FromString(raw[_PREFIX.size:])
        self.calls.append((step.action, dict(context.invocation_metadata())))
        return _response(self._reply(step))

    def _reply(self, step: pb.StepRequest) -> pb.StepReply:
        if step.action == pb.CLOSE:
            self.contexts.pop(step.context_id, None)
            return pb.StepReply(result=pb.StepResult())
        if step.create:
            self.contexts[step.context_id] = TranscriptDigest([(m.role, m.content) for m in step.messages])
        elif step.context_id not in self.contexts:
            return pb.StepReply(mismatch=pb.ContextMismatch(kind=pb.ContextMismatch.UNKNOWN_CONTEXT))
        digest = self.contexts[step.context_id]
        digest.extend(step.new_text + "x")
        view = digest.view()
        return pb.StepReply(result=pb.StepResult(
            text="x", stop_reason=pb.MAX_TOKENS,
            state=transcript_state(view, step.protocol_version)))


def _response(reply: pb.StepReply) -> service_pb2.ModelInferResponse:
    data = reply.SerializeToString()
    response = service_pb2.ModelInferResponse(model_name="glimp_llm")
    response.outputs.add(name=REPLY_TENSOR, datatype="BYTES", shape=[1])
    response.raw_output_contents.append(_PREFIX.pack(len(data)) + data)
    return response


@pytest.fixture()
def replica() -> Iterator[tuple[_RecordingReplica, str]]:
    servicer = _RecordingReplica()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_every_call_of_a_conversation_carries_its_context_id_and_no_client_key(
        replica: tuple[_RecordingReplica, str]) -> None:
    servicer, url = replica
    client_key = bytes(range(32))
    llm = TritonLLM(CloudLinkConfig(url, "tok3n-for-test-only"), client_key=client_key)
    conversation = llm.open([ChatMessage("user", "Q:1+1")])
    step = LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=1)
    conversation.call(step)  # create
    conversation.call(LLMRequest(LLMAction.WRITE_STEP, "x\n\n", GREEDY, max_tokens=1))  # delta
    servicer.forget_all()  # the next step lands on a replica without the context
    reply = conversation.call(LLMRequest(LLMAction.WRITE_STEP, "x\n\nx\n\n", GREEDY, max_tokens=1))
    conversation.close()
    llm.close()

    assert reply.cost.resynced  # mismatch -> one full resend, both calls headed like the rest
    assert len(servicer.calls) == 5  # create, delta, delta (mismatch), resend, close
    headers = [metadata.get(CONTEXT_METADATA_KEY) for _, metadata in servicer.calls]
    assert headers == [conversation.context_id] * 5
    for _, metadata in servicer.calls:
        values = "".join(metadata.values())
        assert client_key.hex() not in values and client_key.decode("latin-1") not in values


def test_two_conversations_send_two_different_routing_keys(replica: tuple[_RecordingReplica, str]) -> None:
    servicer, url = replica
    with TritonLLM(CloudLinkConfig(url, None)) as llm:
        first, second = llm.open([ChatMessage("user", "a")]), llm.open([ChatMessage("user", "b")])
        for conversation in (first, second):
            conversation.call(LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=1))
    keys = [metadata[CONTEXT_METADATA_KEY] for _, metadata in servicer.calls]
    assert keys == [first.context_id, second.context_id] and keys[0] != keys[1]
