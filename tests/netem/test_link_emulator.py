"""The link emulator against a real TCP echo server on loopback."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from glimp_common.errors import BadInputError
from netem import LinkEmulator, LinkProfile


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture()
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _round_trip(port: int, payload: bytes) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.perf_counter()
        sock.sendall(payload)
        received = 0
        while received < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += len(chunk)
        return time.perf_counter() - started


def test_delay_is_added_and_bytes_are_counted(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port, LinkProfile(rtt_s=0.1, bandwidth_mbit_s=0)) as link:
        elapsed = _round_trip(link.port, b"x" * 1000)
        up, down = link.stats.snapshot()
    # 50 ms each way: the echo cannot come back sooner than the added round trip.
    assert elapsed >= 0.1
    assert (up, down) == (1000, 1000)


def test_bandwidth_limits_throughput(echo_port: int) -> None:
    payload = b"y" * 250_000  # 2 Mbit each way at 8 Mbit/s: at least 0.25 s to get through
    with LinkEmulator("127.0.0.1", echo_port, LinkProfile(rtt_s=0.0, bandwidth_mbit_s=8.0)) as link:
        elapsed = _round_trip(link.port, payload)
    assert elapsed >= 0.25


def test_cut_and_down_drop_the_link(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port, LinkProfile.loopback()) as link:
        sock = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"
        link.cut()
        # The cut resets the connection: the next read ends it (reset, or end of stream), no wait.
        try:
            ended = sock.recv(100) == b""
        except ConnectionResetError:
            ended = True
        assert ended
        sock.close()
        link.set_down(True)
        refused = socket.create_connection(("127.0.0.1", link.port), timeout=5)
        refused.settimeout(2)
        assert refused.recv(100) == b""  # accepted by the kernel, then aborted by the emulator
        refused.close()
        link.set_down(False)
        _round_trip(link.port, b"back")  # up again: the whole payload echoes back
        assert link.stats.cuts == 1


@pytest.mark.parametrize(("rtt", "bw"), [(-1.0, 1.0), (float("nan"), 1.0), (0.01, -5.0)])
def test_bad_profiles_are_rejected(rtt: float, bw: float) -> None:
    with pytest.raises(BadInputError):
        LinkProfile(rtt_s=rtt, bandwidth_mbit_s=bw)
