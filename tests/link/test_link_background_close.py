"""Closing a finished context off the answer's path, on a real tritonserver behind the link emulator.

The answer comes back before its context's CLOSE round trip; closing the link sends the closes
still queued (the context is really gone on the server), within a short bound even when the
cloud has stopped answering; nothing is left running; a closed conversation takes no more calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from link_helpers import BREAKER_S, answer

from cloud_service.launcher import TritonServer
from edge_client.errors import BadInputError
from edge_client.link import (
    CloudLinkConfig,
    ResilienceConfig,
    ResilientLLM,
    RetryPolicy,
    TritonLink,
    TritonLLM,
)
from edge_client.llm_backend import LLMAction, LLMRequest
from netem import LinkEmulator, LinkProfile
from onnx_lm import GREEDY, CausalLM, ChatMessage
from protos import edge_cloud_v1_pb2 as pb

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SLOW = LinkProfile(rtt_s=0.2, bandwidth_mbit_s=2.0)
BLACK_HOLE = LinkProfile(rtt_s=3600.0, bandwidth_mbit_s=0.0)  # nothing comes back: a cloud gone quiet
GATE_S = 5.0  # a held close goes on by itself after this (so blocking code fails the test, not hangs it)
DRAIN_S = 0.5
LONG_DEADLINE_S = 30.0  # the calls' own deadline: far beyond the drain's bound
MESSAGES = [ChatMessage("user", "What is 2+2?")]


class GatedCloses(TritonLink):
    """A link that logs its CLOSE calls, and holds each one until `gate` is set."""

    def __init__(self, config: CloudLinkConfig, gate: threading.Event) -> None:
        super().__init__(config)
        self.gate = gate
        self.events: list[str] = []

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None,  # type: ignore[no-untyped-def]
                 on_piece=None):
        if request.action != pb.CLOSE:
            return super().exchange(request, timeout_s, on_piece)
        self.events.append("close sent")
        self.gate.wait(GATE_S)
        exchange = super().exchange(request, timeout_s)
        self.events.append("close replied")
        return exchange


def _resilient(llm: TritonLLM) -> ResilientLLM:
    """Retries and breaker as the tests' other links; no start check (its ping has a close too)."""
    config = ResilienceConfig(retry=RetryPolicy(max_retries=2, backoff_s=0.05), breaker_s=BREAKER_S,
                              check_at_start=False)
    return ResilientLLM(llm, config)


@pytest.fixture()
def slow_link(shared_server: TritonServer) -> Iterator[LinkEmulator]:
    host, port = shared_server.grpc_url.rsplit(":", 1)
    with LinkEmulator(host, int(port), SLOW) as link:
        yield link


@pytest.fixture()
def no_new_threads() -> Iterator[None]:
    """Every thread the test started has ended by its end (the closer's included).

    The shared server's gateway runs in this process and grows its worker pool on demand: its
    threads are the server's, not the test's.
    """
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith("glimp-gateway")]
    assert not left, left


@pytest.mark.parametrize("background", [True, False], ids=["background", "blocking"])
def test_the_answer_returns_before_its_context_close_round_trip(
    background: bool, shared_server: TritonServer, link_token: str, slm: CausalLM,
) -> None:
    host, port = shared_server.grpc_url.rsplit(":", 1)
    gate = threading.Event()
    if not background:
        gate.set()  # the blocking baseline waits for its close: nothing to hold back
    with LinkEmulator(host, int(port), SLOW) as emulated:
        link = GatedCloses(CloudLinkConfig(emulated.address, link_token, timeout_s=LONG_DEADLINE_S), gate)
        with _resilient(TritonLLM(link.config, link=link, background_close=background)) as llm:
            answer(slm, llm, budget_tokens=12)
            link.events.append("answer returned")
            gate.set()  # only now may the close go on
    if background:
        # Deterministic: the close's reply can only come after the gate opened, after the answer.
        assert link.events.count("close sent") == 1 and link.events[-1] == "close replied", link.events
        assert link.events.index("answer returned") < link.events.index("close replied")
    else:
        assert link.events == ["close sent", "close replied", "answer returned"]


def test_closing_the_link_sends_the_queued_close_and_the_context_is_gone(
    shared_server: TritonServer, link_token: str, slow_link: LinkEmulator, no_new_threads: None,
) -> None:
    llm = TritonLLM(CloudLinkConfig(slow_link.address, link_token, timeout_s=LONG_DEADLINE_S))
    conversation = llm.open(MESSAGES)
    conversation.call(LLMRequest(LLMAction.ABSORB, "Let me think.", GREEDY))
    view, context_id = conversation.server_view, conversation.context_id
    conversation.close()
    llm.close()  # the close is on its way (a 200 ms round trip): the drain waits for it
    # The same credential asks the server, directly, to build on that context: it is unknown now.
    with TritonLLM(CloudLinkConfig(shared_server.grpc_url, link_token)) as side:
        reply = side.link.exchange(pb.StepRequest(
            protocol_version=1, context_id=context_id, client_key=llm.client_key, action=pb.ABSORB,
            base=pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest), new_text=" More."))
    assert reply.reply.WhichOneof("outcome") == "mismatch", reply.reply
    assert reply.reply.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT


def test_a_dead_cloud_at_close_time_holds_closing_only_for_the_drain_bound(
    link_token: str, slow_link: LinkEmulator, no_new_threads: None, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge_client.link.closer")
    config = CloudLinkConfig(slow_link.address, link_token, timeout_s=LONG_DEADLINE_S)
    llm = _resilient(TritonLLM(config, close_drain_s=DRAIN_S))
    conversation = llm.open(MESSAGES)
    conversation.call(LLMRequest(LLMAction.ABSORB, "Let me think.", GREEDY))
    slow_link.set_profile(BLACK_HOLE)  # the close goes out and nothing ever answers it
    started = time.monotonic()
    conversation.close()
    llm.close()
    closing_s = time.monotonic() - started
    # The drain's bound (plus the cancelled call's end), not the call's 30 s deadline.
    assert closing_s < LONG_DEADLINE_S / 3, closing_s
    assert any("1 context close(s) not sent" in r.getMessage() for r in caplog.records)


def test_a_closed_conversation_takes_no_more_calls(
    shared_server: TritonServer, link_token: str, no_new_threads: None,
) -> None:
    absorb = LLMRequest(LLMAction.ABSORB, "Let me think.", GREEDY)
    with _resilient(TritonLLM(CloudLinkConfig(shared_server.grpc_url, link_token))) as llm:
        conversation = llm.open(MESSAGES)
        conversation.call(absorb)
        conversation.close()  # its close may still be queued: the id must not be used again
        with pytest.raises(BadInputError, match="is closed"):
            conversation.call(absorb)
        with pytest.raises(BadInputError, match="is closed"):
            conversation.next_turn("4", [ChatMessage("user", "And 3+3?")])
