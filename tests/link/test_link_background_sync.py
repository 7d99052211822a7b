"""Background context sync: the SLM's steps pushed to the cloud (ABSORB) while the SLM keeps writing."""

from __future__ import annotations

import pytest
from link_helpers import DELIMITER, Recording, connect, router_config

from cloud_service.launcher import TritonServer
from edge_client import EdgeRouter, RandomShare, RouterConfig
from edge_client.link import ResilientConversation
from edge_client.llm_backend import LLMAction, LLMReply, LLMRequest
from onnx_lm import GREEDY, CausalLM, ChatMessage

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MESSAGES = [ChatMessage("user", "hello")]
EDGE_TEXT = "The SLM wrote this step by itself, and then this one too."


def _write(conversation: ResilientConversation, transcript: str) -> LLMReply:
    return conversation.call(LLMRequest(LLMAction.WRITE_STEP, transcript, GREEDY, max_tokens=6))


def test_a_pushed_transcript_leaves_the_cloud_step_little_to_send_or_prefill(
    shared_server: TritonServer, link_token: str
) -> None:
    with connect(shared_server.grpc_url, link_token, background_sync=True) as llm:
        warm_conversation = llm.open(MESSAGES)
        transcript = _write(warm_conversation, "").text + DELIMITER + EDGE_TEXT + DELIMITER
        warm_conversation.push(transcript)
        warm_conversation.wait_synced(10.0)
        warm = _write(warm_conversation, transcript)
        pushed, pushes = warm_conversation.background, warm_conversation.background_pushes
    with connect(shared_server.grpc_url, link_token) as llm:
        cold_conversation = llm.open(MESSAGES)
        _write(cold_conversation, "")
        cold_conversation.push(transcript)  # background sync off: nothing happens
        cold = _write(cold_conversation, transcript)
        assert cold_conversation.background_pushes == 0
    assert warm.text == cold.text and pushes == 1 and not warm.cost.resynced
    assert warm.cost.prefill_tokens <= 2 < len(EDGE_TEXT) <= cold.cost.prefill_tokens
    # The reply carries the push's bytes too (they crossed the link for this step), but its own
    # request no longer holds the SLM's text.
    own_bytes_up = warm.cost.bytes_up - pushed.bytes_up
    assert pushed.bytes_up > len(EDGE_TEXT) and own_bytes_up + len(EDGE_TEXT) <= cold.cost.bytes_up


def test_background_sync_in_the_loop_changes_no_text(
    shared_server: TritonServer, link_token: str, slm: CausalLM
) -> None:
    def run(background_sync: bool) -> tuple[str, list[str], int, int]:
        steps = router_config(budget_tokens=120).steps
        config = RouterConfig(policy=RandomShare(0.4, seed=3), steps=steps, answer_by="llm")
        with connect(shared_server.grpc_url, link_token, background_sync=background_sync) as llm:
            backend = Recording(llm)
            result = EdgeRouter(slm, backend, config).answer("hello")  # type: ignore[arg-type]
        resent = sum(s.traffic.resync_bytes_up > 0 for s in result.steps)
        writers = [s.writer for s in result.steps]
        return result.transcript, writers, backend.opened[0].background_pushes, resent

    plain_text, plain_writers, plain_pushes, _ = run(False)
    synced_text, synced_writers, synced_pushes, resent = run(True)
    assert {"edge", "cloud"} <= set(plain_writers)
    assert (synced_text, synced_writers) == (plain_text, plain_writers)
    assert plain_pushes == 0 < synced_pushes and resent == 0
