"""The edge through the project's link emulator (delay, bandwidth, cuts) to a real tritonserver.

Also the byte accounting: the trace counts serialized gRPC messages; the emulator counts what
crossed the wire. The difference is HTTP/2 + gRPC framing, which `bench.wire.GrpcFraming` estimates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from link_helpers import DELIMITER, BeforeCall, answer, check_steps_whole, connect

from bench.wire import LinkTotals, WireCounter
from cloud_service.launcher import TritonServer
from edge_client.trace import AnswerFinished, Event
from netem import LinkEmulator, LinkProfile
from onnx_lm import CausalLM

pytestmark = [pytest.mark.triton, pytest.mark.slow]



def _emulator(server: TritonServer, profile: LinkProfile) -> LinkEmulator:
    host, port = server.grpc_url.rsplit(":", 1)
    return LinkEmulator(host, int(port), profile)


REQUEST_MIN_BYTES = 100  # a StepRequest on the wire; flow-control frames are 13-26 bytes


def cut_once_delivered(link: LinkEmulator) -> None:
    """From a thread: cut `link` as soon as the next request's bytes have gone through to the server."""
    sent_before = link.stats.snapshot()[0]

    def watch() -> None:
        tick = threading.Event()
        while link.stats.snapshot()[0] < sent_before + REQUEST_MIN_BYTES:
            tick.wait(0.001)
        link.cut()

    threading.Thread(target=watch, daemon=True).start()


def test_a_cut_mid_call_on_a_slow_link_is_retried_and_nothing_is_lost(
    shared_server: TritonServer, link_token: str, slm: CausalLM
) -> None:
    with connect(shared_server.grpc_url, link_token) as llm:
        reference = answer(slm, llm)
    slow = LinkProfile(rtt_s=0.2, bandwidth_mbit_s=2.0)
    with _emulator(shared_server, slow) as link, connect(link.address, link_token) as llm:
        # Cut the link once the 5th call's request has reached the server: its reply is then at
        # least half a round trip (100 ms) away, so the cut always lands mid-call.
        cut_in_flight = BeforeCall(llm, {5: lambda: cut_once_delivered(link)})
        result = answer(slm, cut_in_flight)
        cuts, connections, retries = link.stats.cuts, link.stats.connections, llm.retries
        breaker = llm.breaker_state()
    assert cuts == 1 and connections >= 2
    assert retries == 1 and breaker.opens == 0  # one safe retry hid the cut
    assert [s.writer for s in result.steps] == ["cloud"] * len(result.steps)
    check_steps_whole(result, DELIMITER)
    assert result.transcript == reference.transcript  # greedy: the retry changed nothing


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_counted_bytes_against_the_wire(
    gzip: bool, shared_server: TritonServer, link_token: str, slm: CausalLM,
    record_property: Callable[[str, object], None],
) -> None:
    wire = WireCounter()
    with _emulator(shared_server, LinkProfile(rtt_s=0.01, bandwidth_mbit_s=20.0)) as link, \
            connect(link.address, link_token, gzip=gzip, wire=wire) as llm:
        llm.check()
        before = wire.totals
        at_answer: list[LinkTotals | None] = []

        def on_event(event: Event) -> None:
            if isinstance(event, AnswerFinished):  # before the conversation's CLOSE
                at_answer.append(wire.totals)

        result = answer(slm, llm, hook=on_event)  # type: ignore[arg-type]
        llm.close()
        wire_up, wire_down = link.stats.snapshot()
    total, during = wire.totals, at_answer[0]
    assert before is not None and total is not None and during is not None
    traffic = result.totals.traffic
    # Every byte the trace reports went through the link, and nothing else during the question.
    assert (during.bytes_up - before.bytes_up, during.bytes_down - before.bytes_down) == (
        traffic.bytes_up, traffic.bytes_down)
    # Messages alone miss the framing; with it the estimate is within 5% of the wire.
    assert wire_up > total.bytes_up and wire_down > total.bytes_down
    assert abs(total.wire_up_bytes / wire_up - 1) < 0.05, (total, wire_up)
    assert abs(total.wire_down_bytes / wire_down - 1) < 0.05, (total, wire_down)
    for name, value in {
        "calls": total.calls, "message_bytes_up": total.bytes_up, "message_bytes_down": total.bytes_down,
        "wire_bytes_up": wire_up, "wire_bytes_down": wire_down, "estimate_up": total.wire_up_bytes,
        "estimate_down": total.wire_down_bytes,
    }.items():
        record_property(name, value)
    up_x, down_x = wire_up / total.bytes_up, wire_down / total.bytes_down
    up_err, down_err = total.wire_up_bytes / wire_up - 1, total.wire_down_bytes / wire_down - 1
    print(f"\n{total.calls} calls: messages {total.bytes_up}/{total.bytes_down} B, "
          f"wire {wire_up}/{wire_down} B (x{up_x:.2f}/x{down_x:.2f}), "
          f"framing estimate {total.wire_up_bytes}/{total.wire_down_bytes} B ({up_err:+.1%}/{down_err:+.1%})")
