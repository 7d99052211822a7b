"""Cloud faults during a question, on real tritonservers: kill, restart, eviction, wrong token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from link_helpers import (
    CALL_TIMEOUT_S,
    DELIMITER,
    Recording,
    StepHook,
    answer,
    check_steps_whole,
    connect,
    in_background,
    link_server,
    outage_lines,
    sigkill,
)

from cloud_service.launcher import TritonServer, pick_free_port
from edge_client.errors import CloudUnreachableError, NotAuthorizedError
from edge_client.link import (
    BreakerState,
    CloudLinkConfig,
    ResilientConversation,
    ResilientLLM,
    TritonLink,
    TritonLLM,
)
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, CausalLM, ChatMessage
from protos import edge_cloud_v1_pb2 as pb

pytestmark = [pytest.mark.triton, pytest.mark.slow]



def test_sigkill_mid_question_degrades_every_later_step_and_loses_none(
    own_server: TritonServer, link_token: str, slm: CausalLM, caplog: pytest.LogCaptureFixture,
) -> None:
    fault_after = 2
    hook = StepHook({fault_after: lambda: sigkill(own_server)})
    with connect(own_server.grpc_url, link_token) as llm:
        result = answer(slm, llm, hook=hook)
    # Every later step degraded, and the user was told once, not once a step.
    lines = outage_lines(caplog.records)
    assert len(lines) == 1 and lines[0].startswith("cloud unreachable, the SLM writes alone"), lines
    writers = [s.writer for s in result.steps]
    assert len(writers) > fault_after + 2, writers
    assert writers[: fault_after + 1] == ["cloud"] * (fault_after + 1)
    assert writers[fault_after + 1:] == ["degraded"] * (len(writers) - fault_after - 1)
    assert all(s.error for s in result.steps[fault_after + 1:])
    assert result.answer_writer == "degraded" and result.answer_record.error
    check_steps_whole(result, DELIMITER)


def test_restart_resumes_cloud_steps_with_one_full_resend(
    tiny_qwen3_dir: Path, tmp_path: Path, link_token: str, slm: CausalLM,
    record_property: Callable[[str, object], None], caplog: pytest.LogCaptureFixture,
) -> None:
    servers = [link_server(tiny_qwen3_dir, tmp_path / "repo", link_token)]
    config = servers[0].config
    ready_at: list[float] = []
    pings_at_ready: list[int] = []
    llm: ResilientLLM | None = None

    def restart() -> None:
        servers.append(TritonServer(config))  # same ports: the edge dials the same address
        servers[-1].start()
        assert llm is not None
        pings_at_ready.append(llm.monitor.pings)  # a ping counts when sent: later ones follow readiness
        ready_at.append(time.monotonic())

    restarting: list[threading.Thread] = []

    def crash_and_restart() -> None:
        sigkill(servers[0])
        restarting.append(in_background(restart))

    def back_up() -> None:
        """Step 2 ran degraded: wait for the server, then for the health monitor to close the breaker."""
        restarting[0].join(120)
        assert llm is not None and wait_closed(llm, timeout_s=30.0), "the breaker never closed"

    hook = StepHook({1: crash_and_restart, 2: back_up})
    try:
        servers[0].start()
        with connect(config.grpc_url, link_token) as llm:
            result = answer(slm, llm, hook=hook, budget_tokens=240)
            breaker = llm.breaker_state()
            pings_after = llm.monitor.pings
    finally:
        for server in servers:
            server.stop()
    writers = [s.writer for s in result.steps]
    # Every step after the breaker closed went to the cloud again, the first with the one resend.
    assert writers[:3] == ["cloud", "cloud", "degraded"] and set(writers[3:]) == {"cloud"}, writers
    resent = [s.index for s in result.steps if s.traffic.resync_bytes_up > 0]
    assert resent == [3], (resent, writers)
    assert breaker.opens == 1 and breaker.closes == 1 and breaker.state == BreakerState.CLOSED
    # One line when the outage starts, one when the cloud is back: nothing per degraded step.
    lines = outage_lines(caplog.records)
    assert len(lines) == 2 and lines[0].startswith("cloud unreachable") and lines[1].startswith("cloud back")
    # The first ping sent after the server was ready succeeded (not a later one, as it would on a
    # channel still backing off from the refused connections).
    assert pings_after - pings_at_ready[0] <= 1, (pings_at_ready, pings_after)
    check_steps_whole(result, DELIMITER)
    record_property("ready_to_first_cloud_step_s", hook.finished_at[3] - ready_at[0])
    record_property("pings_after_ready", pings_after - pings_at_ready[0])


def wait_closed(llm: ResilientLLM, timeout_s: float) -> bool:
    """Poll the breaker (a cheap lock-guarded read) until it is closed or `timeout_s` passes."""
    tick, deadline = threading.Event(), time.monotonic() + timeout_s
    while llm.breaker.state != BreakerState.CLOSED:
        if time.monotonic() > deadline:
            return False
        tick.wait(0.01)
    return True


def _close_from_the_side(url: str, token: str, conversation: ResilientConversation) -> None:
    """Evict a context through a second connection holding the same credential (an admin's CLOSE)."""
    side = TritonLink(CloudLinkConfig(url, token, timeout_s=CALL_TIMEOUT_S))
    try:
        side.exchange(pb.StepRequest(protocol_version=1, context_id=conversation.context_id,
                                     client_key=conversation.client_key, action=pb.CLOSE))
    finally:
        side.close()


def _crowd_out(url: str, token: str) -> None:
    """Another client fills the server's small cache budget: the least recently used context goes."""
    with TritonLLM(CloudLinkConfig(url, token, timeout_s=CALL_TIMEOUT_S)) as other:
        other.open([ChatMessage("user", "crowd")]).call(LLMRequest(LLMAction.ABSORB, "x" * 260, GREEDY))


@pytest.fixture()
def small_cache_server(tiny_qwen3_dir: Path, tmp_path: Path, link_token: str) -> Iterator[TritonServer]:
    """A server whose cache holds about 300 tokens of the tiny model (about 1 KB each)."""
    with link_server(tiny_qwen3_dir, tmp_path / "repo", link_token, cache_budget_bytes=300_000) as server:
        yield server


@pytest.mark.parametrize("how", ["close", "budget"])
def test_eviction_mid_question_is_resynced_transparently(
    how: str, request: pytest.FixtureRequest, link_token: str, slm: CausalLM
) -> None:
    fixture = "shared_server" if how == "close" else "small_cache_server"
    server: TritonServer = request.getfixturevalue(fixture)
    with connect(server.grpc_url, link_token) as llm:
        reference = answer(slm, llm)
    with connect(server.grpc_url, link_token) as llm:
        backend = Recording(llm)
        evict = {
            "close": lambda: _close_from_the_side(server.grpc_url, link_token, backend.opened[0]),
            "budget": lambda: _crowd_out(server.grpc_url, link_token),
        }[how]
        result = answer(slm, backend, hook=StepHook({3: evict}))
        breaker = llm.breaker_state()
    assert [s.writer for s in result.steps] == ["cloud"] * len(result.steps)
    resent = [s for s in result.steps if s.traffic.resync_bytes_up]
    assert [s.index for s in resent] == [4]
    assert resent[0].traffic.resync_s > 0 and resent[0].traffic.resync_bytes_up < resent[0].traffic.bytes_up
    assert breaker.opens == 0
    assert result.transcript == reference.transcript  # greedy: eviction changed nothing
    check_steps_whole(result, DELIMITER)


def test_a_wrong_token_fails_at_start_and_is_not_retried(shared_server: TritonServer, slm: CausalLM) -> None:
    events: list[object] = []
    with connect(shared_server.grpc_url, "a-wrong-token-of-some-length") as llm:
        with pytest.raises(NotAuthorizedError, match="GLIMP_EDGE_TOKEN"):
            answer(slm, llm, hook=events.append)  # type: ignore[arg-type]
        breaker, retries, probes = llm.breaker_state(), llm.retries, llm.monitor.pings
    assert events == []  # before the first step
    assert breaker.state == BreakerState.CLOSED and breaker.opens == 0  # not hidden as "offline"
    assert retries == 0 and probes == 0


def test_a_cloud_unreachable_at_start_is_an_error_before_any_step(slm: CausalLM, link_token: str) -> None:
    events: list[object] = []
    with connect(f"127.0.0.1:{pick_free_port()}", link_token) as llm:
        with pytest.raises(CloudUnreachableError, match=r"did not answer the start check .*offline_ok"):
            answer(slm, llm, hook=events.append)  # type: ignore[arg-type]
        breaker = llm.breaker_state()
    assert events == []  # before the first step
    assert breaker.state == BreakerState.CLOSED and breaker.opens == 0  # not an outage: a wrong address


def test_a_cloud_down_from_the_start_still_answers_on_the_edge_when_offline_is_ok(
    slm: CausalLM, link_token: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with connect(f"127.0.0.1:{pick_free_port()}", link_token, offline_ok=True) as llm:
        result = answer(slm, llm)
        breaker = llm.breaker_state()
    assert len(outage_lines(caplog.records)) == 1
    assert result.steps and {s.writer for s in result.steps} == {"degraded"}
    assert result.answer_writer == "degraded"
    assert breaker.state == BreakerState.OPEN and breaker.opens == 1
    # One failed start check; afterwards every call failed fast without touching the network.
    assert breaker.rejected_calls == len(result.steps) + 1
    check_steps_whole(result, DELIMITER)
