"""uvicorn serving the app, in the foreground (`glimp api`) or on a thread (tests, benchmarks)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from glimp_common.errors import BadInputError, GlimpError


class ServerStartError(GlimpError):
    """The HTTP server did not start (the port is taken, the host cannot be bound)."""


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket `glimp api` serves on, bound before any model loads, so a port in use
    or a host this machine does not have is one line at once (uvicorn would log it after the
    models had loaded, and exit with a code that means something else)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise BadInputError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise BadInputError(f"port {port} on {host} is in use: stop what holds it, or pick another "
                                "with --port (env GLIMP_API_PORT)") from None
        raise BadInputError(f"cannot listen on {host}:{port} ({exc.strerror}): check --host and --port") \
            from None
    return listener


def uvicorn_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    # One event loop, no reload, no workers: the SLM lives in this process (see engine.py).
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


class ThreadedServer:
    """`with ThreadedServer(app) as server:` serves `app` on `server.url` until the block ends.

    Port 0 (the default) lets the OS pick a free port; `url` names the one it picked.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 30.0,
    ) -> None:
        self.server = uvicorn_server(app, host, port)
        self.start_timeout_s = start_timeout_s
        self.thread = threading.Thread(target=self.server.run, name="glimp-api", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServerStartError(f"the API server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
