"""`LinkEmulator`: an asyncio TCP proxy on 127.0.0.1 run in a background thread.

Each direction is a pipe that holds every chunk for the one-way delay (rtt / 2) and releases
chunks no faster than the bandwidth allows (serialisation delay = bytes / rate). Order is kept.
`cut()` resets every open connection (a dropped link); `set_down(True)` also refuses new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field

from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class LinkProfile:
    """What the emulated link does to traffic."""

    rtt_s: float = 0.040  # round-trip delay added (half each way); 40 ms: a good mobile link
    bandwidth_mbit_s: float = 20.0  # each direction; 0 or inf: unlimited
    name: str = "custom"

    def __post_init__(self) -> None:
        if not math.isfinite(self.rtt_s) or self.rtt_s < 0:
            raise BadInputError(f"rtt_s must be a finite number >= 0, got {self.rtt_s}")
        if math.isnan(self.bandwidth_mbit_s) or self.bandwidth_mbit_s < 0:
            raise BadInputError(f"bandwidth_mbit_s must be >= 0 (0: unlimited), got {self.bandwidth_mbit_s}")

    @property
    def bytes_per_s(self) -> float:
        """Rate in bytes per second; inf when unlimited."""
        if self.bandwidth_mbit_s == 0 or math.isinf(self.bandwidth_mbit_s):
            return math.inf
        return self.bandwidth_mbit_s * 1e6 / 8

    @classmethod
    def loopback(cls) -> LinkProfile:
        return cls(rtt_s=0.0, bandwidth_mbit_s=0.0, name="loopback")


@dataclass
class LinkStats:
    """Bytes that crossed the link, per direction (TCP payload: gRPC + HTTP/2 framing)."""

    bytes_up: int = 0  # client -> server
    bytes_down: int = 0  # server -> client
    connections: int = 0
    cuts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, upstream: bool, n: int) -> None:
        with self._lock:
            if upstream:
                self.bytes_up += n
            else:
                self.bytes_down += n

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.bytes_up, self.bytes_down


class LinkEmulator:
    """Proxy `127.0.0.1:<port>` to `target_host:target_port` through an emulated link.

    Use as a context manager; `address` is what the client dials instead of the server.
    """

    def __init__(self, target_host: str, target_port: int, profile: LinkProfile | None = None,
                 listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.profile = profile or LinkProfile()
        self.stats = LinkStats()
        self._listen_port = listen_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-emulator", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._down = False

    @property
    def port(self) -> int:
        assert self._server is not None, "start the emulator first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LinkEmulator:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", self._listen_port))
        log.info("link emulator %s -> %s:%s (%s)", self.address, *self.target, self.profile)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_profile(self, profile: LinkProfile) -> None:
        """Change delay/bandwidth for data that arrives from now on."""
        self.profile = profile

    def cut(self) -> None:
        """Reset every open connection, as a dropped link does."""
        self._loop.call_soon_threadsafe(self._abort_all)

    def set_down(self, down: bool) -> None:
        """While down, connections are cut and new ones are refused (network gone)."""
        self._down = down
        if down:
            self.cut()

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _shutdown(self) -> None:
        """Close the listener and every connection, on the loop's own thread (asyncio is not thread-safe)."""
        assert self._server is not None
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _abort_all(self) -> None:
        if self._writers:
            self.stats.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._down:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self.stats.connections += 1
        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(
                self._pipe(client_reader, server_writer, upstream=True),
                self._pipe(server_reader, client_writer, upstream=False),
            )
        except asyncio.CancelledError:
            # Stopping the emulator cancels connection handlers; asyncio's stream callback
            # would log a cancelled handler as an error, so end it normally instead.
            pass
        finally:
            self._writers.discard(client_writer)
            self._writers.discard(server_writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Read chunks, stamp them, and let a sender release each at its due time."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer, upstream))
        try:
            while chunk := await reader.read(_CHUNK_BYTES):
                queue.put_nowait((time.monotonic(), chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                    upstream: bool) -> None:
        link_free_at = 0.0  # when the emulated wire finishes sending what it already holds
        while (item := await queue.get()) is not None:
            arrived, chunk = item
            rate = self.profile.bytes_per_s
            start = max(arrived, link_free_at)
            link_free_at = start + (len(chunk) / rate if math.isfinite(rate) else 0.0)
            due = link_free_at + self.profile.rtt_s / 2
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Counted as it is handed to the socket, so a reader that has the bytes sees them counted.
            self.stats.add(upstream, len(chunk))
            try:
                writer.write(chunk)
                await writer.drain()
            except (ConnectionError, OSError):
                break
        with contextlib.suppress(Exception):
            writer.close()
