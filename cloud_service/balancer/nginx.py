"""`NginxBalancer`: one nginx process (Debian's package) in front of the replicas, owned by us.

nginx runs in the foreground (`daemon off;`) as our child, with its prefix, pid file, temp
folders and logs in one private temporary folder (the error log's path is `error_log`). It
dies with its parent: Linux's parent-death signal sends it SIGTERM when this process goes, so a
crashed test or a killed `glimp serve` leaves no orphan. `stop()` sends SIGTERM (nginx's fast
shutdown), then SIGKILL to its process group.

Why nginx and not HAProxy (both are Debian packages here; Envoy is not packaged): nginx 1.22
proxies gRPC natively (`grpc_pass`, HTTP/2 both ways, TLS re-encryption with `grpcs://`), hashes
a request header consistently (`hash $http_x_glimp_context consistent`), answers refused paths
with a gRPC status itself, and is the balancer most operators already run. HAProxy 2.6 could do
the same with `balance hdr()` + `hash-type consistent`; it offers active health checks (gRPC
ones only over HTTP/2 checks with hand-built payloads), which open-source nginx lacks.
"""

from __future__ import annotations

import ctypes
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cloud_service.balancer.nginx_config import BalancerConfig, Layout, render
from cloud_service.errors import ServerStartError
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
NGINX_INSTALL_HINT = "apt-get install -y nginx-light (Debian/Ubuntu), or put an nginx >= 1.13.10 on PATH"


def nginx_binary() -> Path:
    """The nginx on PATH (or /usr/sbin/nginx); ServerStartError saying how to install it."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        raise ServerStartError(f"the balancer needs nginx, which is not installed: {NGINX_INSTALL_HINT}")
    return Path(found)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class NginxBalancer:
    """A running nginx balancer; a context manager. `endpoint` is what edges connect to."""

    def __init__(self, config: BalancerConfig, *, startup_timeout_s: float = 10.0,
                 stop_timeout_s: float = 5.0) -> None:
        self.config = config
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._layout: Layout | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.config.listen_host}:{self.config.listen_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise ServerStartError("the balancer is not started")
        return self._layout

    def __enter__(self) -> NginxBalancer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Write the config, check it (`nginx -t`), start nginx and wait until it accepts connections."""
        if self._process is not None:
            raise ServerStartError("this balancer is already started")
        layout = Layout(Path(tempfile.mkdtemp(prefix="glimp_nginx_")))
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            layout.temp(name).mkdir(parents=True)
        run_as = getpass.getuser() if os.geteuid() == 0 else None
        layout.conf.write_text(render(self.config, layout, run_as=run_as), encoding="utf-8")
        self._layout = layout
        try:
            self._check(layout)
        except ServerStartError:
            self.cleanup()
            raise
        self._process = subprocess.Popen(
            self._argv(layout), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only
        )
        log.info("nginx pid %d balancing %s over %d replicas (%s); error log %s", self._process.pid,
                 self.endpoint, len(self.config.replicas), self.config.policy, layout.error_log)
        try:
            self._wait_listening()
        except BaseException:
            self.cleanup()  # the error already carries the log tail
            raise

    def reconfigure(self, config: BalancerConfig, timeout_s: float = 10.0) -> None:
        """Apply `config` without dropping calls (nginx's reload: new workers, old ones drain).

        Returns once a worker with the new configuration has started and the old one has exited
        (it closes idle connections at once and is cut off after `worker_shutdown_timeout`), so
        every call after this one meets the new ring.
        """
        if self._process is None or self._layout is None:
            raise ServerStartError("the balancer is not started")
        if (config.listen_host, config.listen_port) != (self.config.listen_host, self.config.listen_port):
            raise BadInputError("a reload cannot move the listen address; start a new balancer")
        layout = self._layout
        started_before = self._log_count("start worker process")
        exited_before = self._log_count("exited with code")
        run_as = getpass.getuser() if os.geteuid() == 0 else None
        layout.conf.write_text(render(config, layout, run_as=run_as), encoding="utf-8")
        self._check(layout)
        self.config = config
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while (self._log_count("start worker process") <= started_before
               or self._log_count("exited with code") <= exited_before):
            if time.monotonic() > deadline:
                raise ServerStartError(f"nginx did not reload within {timeout_s} s; error log:\n"
                                       f"{self.error_log_tail()}")
            time.sleep(0.05)

    def _log_count(self, phrase: str) -> int:
        """How often the master's error log says `phrase` (it logs worker starts and exits)."""
        path = self.layout.error_log
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return text.count(phrase)

    def _argv(self, layout: Layout) -> list[str]:
        return [str(nginx_binary()), "-p", str(layout.prefix), "-c", str(layout.conf),
                "-e", str(layout.error_log)]

    def _check(self, layout: Layout) -> None:
        checked = subprocess.run([*self._argv(layout), "-t", "-q"], capture_output=True, text=True,
                                 check=False)
        if checked.returncode != 0:
            raise ServerStartError(f"nginx refused the generated config {layout.conf}: "
                                   f"{checked.stderr.strip()}")

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (fast shutdown), then SIGKILL to its group after `stop_timeout_s`. Keeps the logs."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: the group is still ours
                process.wait(5.0)
        log.info("nginx pid %d stopped (exit %s)", process.pid, process.returncode)
        return process.returncode

    def cleanup(self) -> None:
        """Stop and remove the private folder (logs included)."""
        self.stop()
        if self._layout is not None:
            shutil.rmtree(self._layout.prefix, ignore_errors=True)
            self._layout = None

    def error_log_tail(self, lines: int = 20) -> str:
        path = self.layout.error_log
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerStartError(f"nginx exited with {self._process.returncode} at start; "
                                       f"error log:\n{self.error_log_tail()}")
            try:  # a TCP connect: the listener may speak TLS, which a plaintext probe cannot
                socket.create_connection((self.config.listen_host, self.config.listen_port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ServerStartError(f"nginx did not listen on {self.endpoint} within {self.startup_timeout_s} s; "
                               f"error log:\n{self.error_log_tail()}")
