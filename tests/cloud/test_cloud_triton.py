"""The service on a real tritonserver: deltas, mismatches and resends, auth, invalid requests, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloud_helpers import CALL_TIMEOUT_S, MESSAGES, metric, new_ids, step_request

from cloud_service.launcher import TritonServer, pick_free_port
from edge_client.errors import CloudRejectedError, CloudUnavailableError, NotAuthorizedError
from edge_client.link import CloudLinkConfig, TritonLink, TritonLLM, build_infer_request
from edge_client.link.delta import TritonConversation
from edge_client.link.transport import Exchange
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, TextCodec
from onnx_lm.manifest import Manifest
from protos import edge_cloud_v1_pb2 as pb

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PB_MESSAGES = [pb.ChatMessage(role=m.role, content=m.content) for m in MESSAGES]


def write(transcript: str, max_tokens: int = 12) -> LLMRequest:
    return LLMRequest(LLMAction.WRITE_STEP, transcript, GREEDY, max_tokens=max_tokens)


def absorb(transcript: str) -> LLMRequest:
    return LLMRequest(LLMAction.ABSORB, transcript, GREEDY)


def test_three_calls_send_only_new_text(llm: TritonLLM, tiny_qwen3_dir: Path) -> None:
    codec = TextCodec.load(tiny_qwen3_dir, Manifest.load(tiny_qwen3_dir))
    prompt = codec.render_prompt(list(MESSAGES))
    conversation = llm.open(MESSAGES)
    transcript = "Let me think about this carefully, one step at a time. " * 6
    held = ""  # what the server holds after each call (appended text)
    overheads = []  # bytes up beyond the new text, per delta call
    for call, delta in enumerate(["", "\n\nStep two: add them.", "\n\nStep three: check it."]):
        transcript = held + delta if call else transcript
        reply = conversation.call(write(transcript))
        target = len(codec.encode(prompt + transcript))
        if call == 0:
            assert reply.cost.prefill_tokens == target  # the create prefills everything
        else:
            new_tokens = target - len(codec.encode(prompt + held))
            # New tokens, plus at most the never-fed last generated token and a re-tokenized boundary.
            assert new_tokens <= reply.cost.prefill_tokens <= new_tokens + 2 < target // 4
            assert reply.cost.bytes_up < 300 + len(delta)  # the delta, not the transcript
            overheads.append(reply.cost.bytes_up - len(delta.encode()))
        assert not reply.cost.resynced
        held = transcript + reply.text
    assert conversation.server_view.length_bytes == len(held.encode())
    # Exactly the new text on top of a fixed overhead (ids, base, sampling; varint widths aside).
    assert abs(overheads[0] - overheads[1]) <= 2, overheads
    conversation.close()


def _corrupt(link: TritonLink, llm: TritonLLM, context_id: str, view: pb.TranscriptState, kind: str) -> None:
    """Make the server's copy of a context differ from the client's view, as `kind` says."""
    ids = (context_id, llm.client_key)
    if kind == "unknown":
        link.exchange(step_request(*ids, action=pb.CLOSE))
    elif kind == "length":  # someone appended text the client does not know about
        link.exchange(step_request(*ids, base=view, action=pb.ABSORB, new_text=" extra"))
    else:  # same length, other text
        same_length = "x" * view.length_bytes
        link.exchange(step_request(*ids, create=True, messages=PB_MESSAGES, action=pb.ABSORB,
                                   new_text=same_length))


@pytest.mark.parametrize("kind", ["unknown", "length", "digest"])
def test_a_mismatch_is_typed_and_the_resend_matches_a_fresh_context(
    llm: TritonLLM, link: TritonLink, kind: str
) -> None:
    start, step = "Let me think.", "\n\nNext:"
    fresh = llm.open(MESSAGES).call(write(start + step, max_tokens=20))

    conversation = llm.open(MESSAGES)
    conversation.call(absorb(start))
    view = conversation.server_view
    base = pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest)
    _corrupt(link, llm, conversation.context_id, base, kind)
    raw = link.exchange(step_request(conversation.context_id, llm.client_key, action=pb.ABSORB, base=base))
    expected_kind = {
        "unknown": pb.ContextMismatch.UNKNOWN_CONTEXT, "length": pb.ContextMismatch.LENGTH_MISMATCH,
        "digest": pb.ContextMismatch.DIGEST_MISMATCH,
    }[kind]
    assert raw.reply.WhichOneof("outcome") == "mismatch" and raw.reply.mismatch.kind == expected_kind

    resent = conversation.call(write(start + step, max_tokens=20))
    assert resent.cost.resynced and resent.cost.resync_bytes_up > 0
    assert resent.text == fresh.text and resent.stop_reason == fresh.stop_reason
    assert conversation.call(absorb(start + step + resent.text + "\n\n")).cost.resynced is False


class TamperedStates:
    """The real link, but the n-th reply reports a server state the client cannot agree with.

    A server that disagrees after a successful call cannot be made on purpose (the engine commits
    exactly what the client computes), so this one fault is injected into a real reply.
    """

    def __init__(self, link: TritonLink, tamper_call: int) -> None:
        self.link, self.tamper_call, self.calls = link, tamper_call, 0
        self.sent: list[pb.StepRequest] = []

    streamed = False

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None,
                 on_piece: object = None) -> Exchange:
        self.calls += 1
        self.sent.append(request)
        exchange = self.link.exchange(request, timeout_s)
        if self.calls == self.tamper_call:
            exchange.reply.result.state.digest = "0" * 64
        return exchange


def test_a_server_state_that_differs_after_a_call_makes_the_next_call_a_reported_resync(
    llm: TritonLLM
) -> None:
    tampered = TamperedStates(llm.link, tamper_call=2)
    conversation = TritonConversation(tampered, llm.client_key, MESSAGES)  # type: ignore[arg-type]
    conversation.call(absorb("Let me think."))
    conversation.call(absorb("Let me think. Step one."))  # its reply's state is tampered
    after = conversation.call(write("Let me think. Step one. Step two.", max_tokens=4))
    # No delta on a doubted base: the whole transcript went up again, with create=true ...
    assert tampered.sent[2].create and tampered.sent[2].new_text == "Let me think. Step one. Step two."
    # ... and the trace reports it as the resync it is.
    assert after.cost.resynced and after.cost.resync_bytes_up == after.cost.bytes_up > 0
    following = absorb("Let me think. Step one. Step two." + after.text + " More.")
    assert not conversation.call(following).cost.resynced
    conversation.close()


def test_one_credential_cannot_read_or_extend_another_context(
    triton_server: TritonServer, cloud_token: str, llm: TritonLLM
) -> None:
    owner = llm.open(MESSAGES)
    owner.call(absorb("Step 1: private."))
    view = owner.server_view
    with TritonLLM(CloudLinkConfig(triton_server.grpc_url, cloud_token, timeout_s=CALL_TIMEOUT_S)) as other:
        base = pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest)
        for action in (pb.ABSORB, pb.SCORE):
            fields = {"score_bytes": 1} if action == pb.SCORE else {}
            reply = other.link.exchange(step_request(owner.context_id, other.client_key, base=base,
                                                     action=action, new_text="x", **fields)).reply
            assert reply.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
            assert not reply.mismatch.server_state.digest
    assert not owner.call(absorb("Step 1: private. Step 2.")).cost.resynced


@pytest.mark.parametrize("token", [None, "a-wrong-token-of-some-length"])
def test_a_missing_or_wrong_token_is_rejected(triton_server: TritonServer, token: str | None) -> None:
    config = CloudLinkConfig(triton_server.grpc_url, token, timeout_s=CALL_TIMEOUT_S)
    with TritonLLM(config) as client, pytest.raises(NotAuthorizedError, match="token"):
        client.open(MESSAGES).call(absorb("hi"))


def test_the_repository_api_is_not_on_the_edge_port(
    triton_server: TritonServer, cloud_token: str, llm: TritonLLM
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    headers = {"triton-grpc-protocol-x-edge-token": cloud_token}
    for attempt in (lambda: client.unload_model("glimp_llm", headers=headers),
                    lambda: client.load_model("evil", headers=headers),
                    lambda: client.get_model_repository_index(headers=headers)):
        with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
            attempt()
    assert llm.ready()


def _garbage(ids: tuple[str, bytes]) -> object:
    infer = build_infer_request(step_request(*ids))
    infer.raw_input_contents[0] = b"\x05\x00\x00\x00\xff\xff\xff\xff\xff"
    return infer


def _two_elements(ids: tuple[str, bytes]) -> object:
    infer = build_infer_request(step_request(*ids, action=pb.ABSORB))
    infer.inputs[0].shape[0] = 2
    infer.raw_input_contents[0] += infer.raw_input_contents[0]
    return infer


INVALID = [
    ("malformed bytes", _garbage, "not a serialized"),
    ("two elements", _two_elements, "shape"),
    ("empty context id", lambda ids: build_infer_request(step_request("", ids[1], action=pb.ABSORB)),
     "context_id is empty"),
    ("max_tokens 0", lambda ids: build_infer_request(step_request(
        *ids, action=pb.WRITE_STEP, max_tokens=0, create=True, messages=PB_MESSAGES)), "max_tokens"),
    ("max_tokens 1e9", lambda ids: build_infer_request(step_request(
        *ids, action=pb.WRITE_STEP, max_tokens=10**9, create=True, messages=PB_MESSAGES)), "max_tokens"),
    ("10 MB of text", lambda ids: build_infer_request(step_request(
        *ids, action=pb.ABSORB, create=True, messages=PB_MESSAGES, new_text="a" * 10_000_000)), "limit"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_requests_get_invalid_arg_and_the_server_carries_on(
    llm: TritonLLM, link: TritonLink, name: str, make, fragment: str  # type: ignore[no-untyped-def]
) -> None:
    bystander = llm.open(MESSAGES)
    before = bystander.call(write("Let me think.", max_tokens=16))
    with pytest.raises(CloudRejectedError, match=fragment):
        link.send_infer(make(new_ids()))
    after = bystander.call(write("Let me think.", max_tokens=16))  # re-created: a diverged transcript
    assert after.text == before.text


def test_deadlines_and_unreachable_servers_are_unavailable(own_server: tuple[TritonServer, str]) -> None:
    # A server of its own: a call the client gave up on may still be run by the server later, and
    # would count in the shared server's metrics another test reads as exact deltas.
    server, cloud_token = own_server
    hurried = CloudLinkConfig(server.grpc_url, cloud_token, timeout_s=1e-6)
    with TritonLLM(hurried) as client, pytest.raises(CloudUnavailableError, match="DEADLINE_EXCEEDED"):
        client.open(MESSAGES).call(absorb("hi"))
    with TritonLLM(CloudLinkConfig(f"127.0.0.1:{pick_free_port()}", cloud_token, timeout_s=2.0)) as nowhere:
        with pytest.raises(CloudUnavailableError):
            nowhere.open(MESSAGES).call(absorb("hi"))
        assert not nowhere.ready(timeout_s=2.0)


def test_score_and_metrics(triton_server: TritonServer, llm: TritonLLM, link: TritonLink) -> None:
    # The server is shared with earlier tests: every counter is read before and after, and the
    # change must be exactly what this test's calls caused.
    url = triton_server.metrics_url
    names = ("glimp_context_cache_hits_total", "glimp_decode_tokens_total", "glimp_prefill_tokens_total",
             "glimp_context_cache_bytes")
    before = {name: metric(url, name) for name in names}
    unknown_before = metric(url, "glimp_context_mismatches_total", 'kind="UNKNOWN_CONTEXT"')
    length_before = metric(url, "glimp_context_mismatches_total", 'kind="LENGTH_MISMATCH"')
    success_before = metric(url, "nv_inference_request_success", 'model="glimp_llm"')
    conversation = llm.open(MESSAGES)
    absorbed = conversation.call(absorb("Let me think."))
    scored = conversation.call(
        LLMRequest(LLMAction.SCORE, "Let me think.", GREEDY, candidate=" Two and two.")
    )
    assert scored.mean_logprob is not None and scored.mean_logprob < 0
    written = conversation.call(write("Let me think.", max_tokens=5))
    bytes_held = metric(url, "glimp_context_cache_bytes")
    # One mismatch of each of two kinds: a context never made, and a base of the wrong length.
    unknown = link.exchange(step_request(*new_ids(), action=pb.ABSORB, base=pb.TranscriptState()))
    view = conversation.server_view
    longer = pb.TranscriptState(length_bytes=view.length_bytes + 1, digest=view.digest)
    length = link.exchange(step_request(conversation.context_id, llm.client_key, action=pb.ABSORB,
                                        base=longer))
    assert (unknown.reply.mismatch.kind, length.reply.mismatch.kind) == (
        pb.ContextMismatch.UNKNOWN_CONTEXT, pb.ContextMismatch.LENGTH_MISMATCH)
    after = {name: metric(url, name) for name in names}
    costs = [absorbed.cost, scored.cost, written.cost]
    assert after["glimp_context_cache_hits_total"] - before["glimp_context_cache_hits_total"] == 3
    decoded = after["glimp_decode_tokens_total"] - before["glimp_decode_tokens_total"]
    assert decoded == written.cost.decode_tokens
    assert after["glimp_prefill_tokens_total"] - before["glimp_prefill_tokens_total"] == sum(
        c.prefill_tokens for c in costs) > 0
    assert bytes_held > before["glimp_context_cache_bytes"]  # the new context is held
    assert metric(url, "glimp_context_mismatches_total", 'kind="UNKNOWN_CONTEXT"') - unknown_before == 1
    assert metric(url, "glimp_context_mismatches_total", 'kind="LENGTH_MISMATCH"') - length_before == 1
    assert metric(url, "nv_inference_request_success", 'model="glimp_llm"') - success_before == 5

