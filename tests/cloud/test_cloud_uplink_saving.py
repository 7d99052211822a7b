"""The delta protocol's uplink saving after a long transcript: one step's request, delta vs full resend.

The README claims 10x after a 2,000-token transcript (bench/e2e/cloud_figures.py measures it on a
real server). Here the conversation talks to the real engine in process through a link that
counts exactly what `TritonLink` counts (the serialized KServe request), on a tiny Qwen3 whose
window holds the whole transcript.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from cloud_service.engines.onnx import Engine
from edge_client.link import build_infer_request
from edge_client.link.delta import TritonConversation
from edge_client.link.kserve import parse_infer_response
from edge_client.link.transport import Exchange
from edge_client.llm_backend import LLMAction, LLMReply, LLMRequest
from export.hf_export import export_checkpoint
from export.shapes import SHAPES, build_random_checkpoint
from onnx_lm import GREEDY, CausalLM, ChatMessage, SessionConfig
from protos import edge_cloud_v1_pb2 as pb

TRANSCRIPT_TOKENS = 2000
MESSAGES = (ChatMessage("user", "Add the numbers 12, 7, 30 and 51, one step at a time."),)


class EngineLink:
    """`TritonLink.exchange` against an in-process engine: same request bytes, no network."""

    streamed = False  # the ONNX engine is not decoupled

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None,
                 on_piece: object = None) -> Exchange:
        infer = build_infer_request(request)
        started = time.perf_counter()
        reply = pb.StepReply.FromString(self.engine.handle_bytes(request.SerializeToString()))
        response = _infer_response(reply)
        assert parse_infer_response(response) == reply
        elapsed = time.perf_counter() - started
        return Exchange(reply, infer.ByteSize(), response.ByteSize(), elapsed, elapsed)


def _infer_response(reply: pb.StepReply):  # type: ignore[no-untyped-def]
    from tritonclient.grpc import service_pb2

    payload = reply.SerializeToString()
    response = service_pb2.ModelInferResponse(model_name="glimp_llm")
    response.outputs.add(name="REPLY", datatype="BYTES", shape=[1])
    response.raw_output_contents.append(len(payload).to_bytes(4, "little") + payload)
    return response


@pytest.fixture(scope="module")
def long_window_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The tiny Qwen3 shape with a 4,096-token window (random weights: only the bytes matter)."""
    base = tmp_path_factory.mktemp("long_window")
    shape = dataclasses.replace(SHAPES["tiny"], max_position_embeddings=4096)
    export_checkpoint(build_random_checkpoint("qwen3", shape, base / "checkpoint"), base / "onnx")
    return Engine(CausalLM.load(base / "onnx", SessionConfig(providers="cpu", intra_op_threads=1)))


def _transcript(lm: CausalLM, tokens: int) -> str:
    steps, k = [], 0
    while len(lm.tokenizer.encode("\n\n".join(steps))) < tokens:
        k += 1
        steps.append(f"Step {k}: we add {k * 7} and {k * 3} to get {k * 10}.")
    return "\n\n".join(steps) + "\n\n"


def _one_step_after(engine: Engine, transcript: str, *, resend_full: bool) -> LLMReply:
    conversation = TritonConversation(EngineLink(engine), b"k" * 32, MESSAGES,  # type: ignore[arg-type]
                                      resend_full=resend_full)
    conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))
    step = transcript + "Step 1000: now we check the sum once more."
    return conversation.call(LLMRequest(LLMAction.WRITE_STEP, step, GREEDY, max_tokens=8))


def test_one_step_after_2000_tokens_sends_at_least_8x_less_than_a_full_resend(
    long_window_engine: Engine
) -> None:
    transcript = _transcript(long_window_engine.lm, TRANSCRIPT_TOKENS)
    delta = _one_step_after(long_window_engine, transcript, resend_full=False)
    full = _one_step_after(long_window_engine, transcript, resend_full=True)
    assert delta.text == full.text  # the same step either way
    assert not delta.cost.resynced and len(transcript.encode()) < full.cost.bytes_up
    assert full.cost.bytes_up >= 8 * delta.cost.bytes_up, (full.cost.bytes_up, delta.cost.bytes_up)
