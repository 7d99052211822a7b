"""What the link puts on the wire, through the project's link emulator to a real tritonserver.

The trace's byte counts (background pushes included) against the link's own totals, the framing
estimate with gzip against the bytes the emulator saw, and an idle connection kept alive by
pings that the server's keep-alive flags permit.
"""

from __future__ import annotations

import threading
import time

import pytest
from link_helpers import CALL_TIMEOUT_S, Recording, connect, router_config

from bench.wire import LinkTotals, WireCounter
from cloud_service.launcher import TritonServer
from edge_client import EdgeRouter, RandomShare, RouterConfig
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from edge_client.trace import AnswerFinished, Event
from netem import LinkEmulator, LinkProfile
from onnx_lm import GREEDY, CausalLM, ChatMessage

pytestmark = [pytest.mark.triton, pytest.mark.slow]

PING_FRAME_BYTES = 17  # HTTP/2 PING: 9-byte frame header + 8 bytes of opaque data


def _emulator(server: TritonServer, profile: LinkProfile | None = None) -> LinkEmulator:
    host, port = server.grpc_url.rsplit(":", 1)
    return LinkEmulator(host, int(port), profile or LinkProfile(rtt_s=0.01, bandwidth_mbit_s=20.0))


def _within(estimate: int, measured: int, tolerance: float = 0.05) -> bool:
    return abs(estimate / measured - 1) < tolerance


def test_background_pushes_are_in_the_trace_and_match_the_link_totals(
    shared_server: TritonServer, link_token: str, slm: CausalLM
) -> None:
    wire = WireCounter()
    steps = router_config(budget_tokens=120).steps
    config = RouterConfig(policy=RandomShare(0.4, seed=3), steps=steps, answer_by="llm")
    with _emulator(shared_server) as link, \
            connect(link.address, link_token, background_sync=True, wire=wire) as llm:
        llm.check()
        before = wire.totals
        at_answer: list[LinkTotals] = []

        def on_event(event: Event) -> None:
            if isinstance(event, AnswerFinished):  # before the conversation's CLOSE
                at_answer.append(wire.totals)

        backend = Recording(llm)
        result = EdgeRouter(slm, backend, config).answer("hello", on_event=on_event)  # type: ignore[arg-type]
        pushes = backend.opened[0].background_pushes
        pushed = backend.opened[0].background
        llm.close()
        wire_up, wire_down = link.stats.snapshot()
    during, total = at_answer[0], wire.totals
    traffic = result.totals.traffic
    assert pushes > 0 and pushed.bytes_up > 0  # the SLM's steps did go up in the background
    # Every byte that crossed the link during the question is in the trace, pushes included.
    assert (traffic.bytes_up, traffic.bytes_down) == (
        during.bytes_up - before.bytes_up, during.bytes_down - before.bytes_down)
    assert _within(total.wire_up_bytes, wire_up) and _within(total.wire_down_bytes, wire_down)


def test_the_framing_estimate_applies_gzip_as_grpc_does(shared_server: TritonServer, link_token: str) -> None:
    # Long, repetitive transcripts: gzip shrinks each request to a fraction of its message size.
    transcript = "The tens first, then the ones. " * 12
    wire = WireCounter()
    with _emulator(shared_server) as link:
        config = CloudLinkConfig(link.address, link_token, timeout_s=CALL_TIMEOUT_S, gzip=True)
        with TritonLLM(config, link=wire.link(config)) as llm:
            for _ in range(6):
                conversation = llm.open([ChatMessage("user", "hello")])
                conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))
        wire_up, wire_down = link.stats.snapshot()
    total = wire.totals
    assert total.calls == 6 and wire_up < total.bytes_up  # less than the bare messages: gzip at work
    assert _within(total.wire_up_bytes, wire_up), (total, wire_up)
    assert _within(total.wire_down_bytes, wire_down), (total, wire_down)


class PingWatch:
    """Keep-alive pings seen on an idle emulated link: bursts of exactly one PING up (and its ACK down).

    Polls the emulator's byte counters; a burst in the first `settle_s` after the start is the
    connection's own flow-control and BDP traffic after the last call, not a keep-alive ping.
    """

    def __init__(self, link: LinkEmulator, settle_s: float = 2.0) -> None:
        self.link, self.settle_s = link, settle_s
        self.started = time.monotonic()
        self.up, self.down = link.stats.snapshot()
        self.pings = 0
        self.down_after_first_ping = 0  # bytes down since the first ping went up

    def wait(self, pings: int, timeout_s: float) -> bool:
        """True once `pings` pings went up; False when `timeout_s` passes first."""
        tick, deadline = threading.Event(), time.monotonic() + timeout_s
        while self.pings < pings:
            if time.monotonic() > deadline:
                return False
            tick.wait(0.05)
            self._poll()
        return True

    def acks(self, timeout_s: float) -> int:
        """Bytes down since the first ping, once they stop growing (one poll interval apart)."""
        tick = threading.Event()
        deadline = time.monotonic() + timeout_s
        while self.down_after_first_ping < PING_FRAME_BYTES * self.pings and time.monotonic() < deadline:
            tick.wait(0.05)
            self._poll()
        return self.down_after_first_ping

    def _poll(self) -> None:
        up, down = self.link.stats.snapshot()
        settled = time.monotonic() - self.started > self.settle_s
        if up != self.up and settled and up - self.up == PING_FRAME_BYTES:
            self.pings += 1
        if self.pings:
            self.down_after_first_ping += down - self.down
        self.up, self.down = up, down


def test_an_idle_connection_survives_the_edges_keepalive_pings(
    shared_server: TritonServer, link_token: str
) -> None:
    # The edge pings idle connections (CloudLinkConfig.keepalive_time_s, 30 s). Without the
    # server's keep-alive flags Triton answers the 4th idle ping with GOAWAY "too_many_pings" and
    # drops the connection. 5.5 s: just above the fastest idle ping the flags permit (5 s).
    keepalive_s, pings = 5.5, 4
    with LinkEmulator(*_host_port(shared_server), LinkProfile.loopback()) as link:
        config = CloudLinkConfig(link.address, link_token, timeout_s=CALL_TIMEOUT_S,
                                 keepalive_time_s=keepalive_s)
        with TritonLLM(config) as llm:
            assert llm.ready()
            watch = PingWatch(link)
            assert watch.wait(pings, timeout_s=pings * keepalive_s + 15), "the idle link stopped pinging"
            # Only the ACKs came back: a GOAWAY would add its own frame (17 + 14 bytes + reason).
            assert watch.acks(timeout_s=5) == pings * PING_FRAME_BYTES
            assert llm.ready()  # still answers ...
            connections = link.stats.connections
    assert connections == 1  # ... on the same connection: none was dropped and redialed


def _host_port(server: TritonServer) -> tuple[str, int]:
    host, port = server.grpc_url.rsplit(":", 1)
    return host, int(port)
