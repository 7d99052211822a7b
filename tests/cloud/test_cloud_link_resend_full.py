"""The full-resend baseline of the cloud link: every call carries the whole transcript."""

from __future__ import annotations

from cloud_helpers import CALL_TIMEOUT_S

from cloud_service.launcher import TritonServer
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage


def test_resend_full_sends_everything_and_writes_the_same(
    triton_server: TritonServer, cloud_token: str
) -> None:
    transcript = "The tens first. " * 20
    replies = {}
    for resend_full in (False, True):
        config = CloudLinkConfig(triton_server.grpc_url, cloud_token, timeout_s=CALL_TIMEOUT_S)
        with TritonLLM(config, resend_full=resend_full) as llm:
            conversation = llm.open([ChatMessage("user", "What is 12+30?")])
            conversation.call(LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=4))
            first = conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))
            second = conversation.call(
                LLMRequest(LLMAction.WRITE_STEP, transcript + "Then", GREEDY, max_tokens=6)
            )
            replies[resend_full] = (first, second)
            conversation.close()
    delta_first, delta_second = replies[False]
    full_first, full_second = replies[True]
    assert full_second.text == delta_second.text
    # The delta link sends "Then" (plus the digest of what it believes the server holds);
    # the baseline sends the whole transcript again.
    assert delta_second.cost.bytes_up < len(transcript) < full_second.cost.bytes_up
    assert not full_second.cost.resynced
