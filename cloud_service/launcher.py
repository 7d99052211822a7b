"""`TritonServer`: the real `tritonserver` binary (shipped in `nvidia-pytriton`) on a model repository.

Used by `glimp serve`, the tests and the benchmark alike. Starting it directly takes what
`notes/triton.md` found: a backend directory of our own (symlinks to PyTriton's python backend
plus a *copy* of the stub for this interpreter), `LD_LIBRARY_PATH` with the wheel's bundled
libraries and this interpreter's libpython, and this environment's `bin/` first on `PATH`
(the stub runs Python isolated and takes its prefix from the first `python3` there).

The server listens on a unix socket in its private (0700) work directory; edges reach it through
the `Gateway` (cloud_service/gateway.py) on the public port, which checks the edge token and stops
requests that would crash the server. So no token is on the server's argv, and the repository API
is reachable only from this user's processes.

Ready means a real tiny inference succeeded (through the gateway), not just health. Stopping sends
SIGTERM, then SIGKILL to the server's process group after a timeout; the group is killed in any
case once the server is gone (its python-backend stubs outlive a crashed server otherwise), and
its shared-memory files are removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cloud_service.errors import ServerStartError
from cloud_service.gateway import Gateway, GatewayConfig
from cloud_service.readiness import ReadinessError, ReadinessTarget, check_ready
from cloud_service.repository import RepositorySettings, build_repository
from cloud_service.security import TOKEN_ENV, TOKEN_FILE_ENV, TLSFiles, check_token
from cloud_service.server_flags import LocalServerFlags, TritonFlags
from cloud_service.serving_config import ServingConfig, check_ports
from glimp_common.errors import BadInputError
from protos.contract import MODEL_NAME

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_STUB_WATCH_S = 1.0  # how often a stub's watcher checks that its server still lives
_LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ServerConfig:
    """How to run one tritonserver."""

    repository: Path  # a model repository holding `glimp_llm` (see repository.py)
    grpc_port: int = ServingConfig.grpc_port
    metrics_port: int = ServingConfig.metrics_port
    host: str = ServingConfig.host  # address the gRPC gateway listens on ("0.0.0.0" for every interface)
    metrics_host: str = "127.0.0.1"  # the metrics page (no auth) stays on loopback unless asked
    token: str | None = field(default=None, repr=False)  # shared edge token; None: inference is open
    tls: TLSFiles | None = None  # set: gRPC over TLS
    tls_server_name: str | None = None  # the name in the certificate, when it is not `host`
    shm_prefix: str = field(default_factory=lambda: f"glimp_{secrets.token_hex(6)}_")
    startup_timeout_s: float = 180.0  # from launch to the first successful inference
    ready_check_timeout_s: float = 30.0  # deadline of each readiness call
    stop_timeout_s: float = 20.0  # SIGTERM grace before SIGKILL
    log_file: Path | None = None  # server log; None: a temporary file removed at stop
    python_bin: Path = field(default_factory=lambda: Path(sys.prefix) / "bin")  # env the stub imports from
    decoupled: bool = False  # the model answers over ModelStreamInfer only (the vLLM engine)

    def __post_init__(self) -> None:
        check_ports(self.grpc_port, self.metrics_port)
        if self.token is not None:
            check_token(self.token)
        if not (Path(self.repository) / MODEL_NAME / "config.pbtxt").is_file():
            raise BadInputError(f"{self.repository} holds no {MODEL_NAME}/config.pbtxt; build it with "
                                "cloud_service.repository.build_repository")
        if not (self.python_bin / "python3").exists():
            raise BadInputError(f"{self.python_bin} has no python3: the stub could not import the engine")
        if min(self.startup_timeout_s, self.ready_check_timeout_s, self.stop_timeout_s) <= 0:
            raise BadInputError("timeouts must be positive")

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        host = "127.0.0.1" if self.metrics_host in ("0.0.0.0", "") else self.metrics_host
        return f"http://{host}:{self.metrics_port}/metrics"


def local_server(model_dir: Path | str, work_dir: Path | str, *, token: str | None,
                 settings: RepositorySettings | None = None, **server: Any) -> TritonServer:
    """An unstarted `TritonServer` for `model_dir` on free loopback ports (use it as a context manager).

    The one recipe the demo, the benchmark and the tests share: a repository built under
    `work_dir` (linking the model unless `settings` say otherwise), both ports picked free,
    `server` holding any other `ServerConfig` field (e.g. `grpc_port` to reuse, `tls`).
    """
    repository = build_repository(model_dir, work_dir, settings or RepositorySettings(link_model=True),
                                  force=True)
    grpc_port = server.pop("grpc_port", None) or pick_free_port()
    config = ServerConfig(repository, grpc_port=grpc_port, metrics_port=pick_free_port(), token=token,
                          **server)
    return TritonServer(config)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside: SIGTERM raises KeyboardInterrupt in the main thread, so `with` blocks unwind and a
    server started inside stops as on Ctrl-C. (Python's default ends the process on the spot: the
    server, in its own session, would be left only to its parent-death signal, its shm files kept.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pytriton_dir() -> Path:
    """`site-packages/pytriton/tritonserver`; ServerStartError when nvidia-pytriton is missing."""
    try:
        import pytriton
    except ImportError as exc:
        raise ServerStartError(
            "the tritonserver binary comes with nvidia-pytriton: pip install 'glimprouter[cloud]'"
        ) from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


class TritonServer:
    """A running tritonserver; a context manager (`with TritonServer(config) as server: ...`)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.ready_s: float | None = None  # launch to first successful inference
        self._process: subprocess.Popen[bytes] | None = None
        self._gateway: Gateway | None = None
        self._work_dir: Path | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def grpc_url(self) -> str:
        return self.config.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.config.metrics_url

    @property
    def upstream(self) -> str | None:
        """The server's own gRPC target (a unix socket only this user can reach), while started."""
        return None if self._work_dir is None else _local_flags(self.config, self._work_dir).grpc_target

    @property
    def gateway(self) -> Gateway | None:
        return self._gateway

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> float:
        """Launch and wait until a real inference succeeds; return the seconds it took.

        Raises ServerStartError (with the server's log tail) when it exits or is not ready in time.
        """
        if self._process is not None:
            raise ServerStartError("this server is already started")
        started = time.perf_counter()
        self._work_dir = Path(tempfile.mkdtemp(prefix="glimp_triton_"))  # 0700: holds the socket
        self._log_path = self.config.log_file or self._work_dir / "tritonserver.log"
        _prepare_backends(self._work_dir / "backends")
        try:
            self._start_gateway()  # first: a busy port fails here, before any server process exists
            self._launch()
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        return self.ready_s

    def restart(self) -> float:
        """Stop the server process (whatever state it is in) and launch a fresh one behind the same
        gateway and socket; return the seconds until it answered. Raises ServerStartError."""
        if self._work_dir is None:
            raise ServerStartError("this server was never started")
        started = time.perf_counter()
        if self._process is not None:
            code = _terminate(self._process, self.config.stop_timeout_s)
            log.warning("tritonserver pid %d replaced (exit %s)", self._process.pid, code)
            self._process = None
        remove_shm_files(self.config.shm_prefix)
        (self._work_dir / "triton.sock").unlink(missing_ok=True)
        self._launch()
        self._wait_ready(started)
        return time.perf_counter() - started

    def _launch(self) -> None:
        assert self._work_dir is not None and self._log_path is not None
        log_handle = open(self._log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._process = subprocess.Popen(
                self._command(self._work_dir / "backends"), stdout=log_handle, stderr=subprocess.STDOUT,
                env=self._environment(), start_new_session=True,  # own process group: stubs included
                preexec_fn=_parent_death_hook(),
            )
        finally:
            log_handle.close()
        log.info("tritonserver pid %d starting behind %s", self._process.pid, self.grpc_url)

    def check_ready(self, timeout_s: float | None = None) -> float:
        """One real tiny inference now; return its seconds. Raises ReadinessError."""
        return check_ready(self._readiness_target(), timeout_s or self.config.ready_check_timeout_s)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the server to exit by itself; its exit code, or None on timeout."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after `stop_timeout_s`; remove shm files and the work dir. Idempotent."""
        code = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._process is not None:
            code = _terminate(self._process, self.config.stop_timeout_s)
            log.info("tritonserver pid %d stopped (exit %s)", self._process.pid, code)
            self._process = None
        removed = remove_shm_files(self.config.shm_prefix)
        if removed:
            log.info("removed %d shared-memory files left by the server", removed)
        if self._work_dir is not None:
            if self.config.log_file is None and self._log_path is not None and code not in (0, None):
                log.warning("tritonserver exited with %s; last log lines:\n%s", code, self.log_tail())
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        return code

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ""
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _command(self, backends: Path) -> list[str]:
        work_dir = self._work_dir or backends.parent
        flags = TritonFlags(model_repository=str(Path(self.config.repository).resolve()),
                            local=_local_flags(self.config, work_dir, backends))
        return [str(pytriton_dir() / "bin" / "tritonserver"), *flags.args()]

    def _start_gateway(self) -> None:
        cfg = self.config
        assert self.upstream is not None
        listen = f"{cfg.host}:{cfg.grpc_port}"
        self._gateway = Gateway(GatewayConfig(listen, self.upstream, cfg.token, cfg.tls))
        self._gateway.start()

    def _environment(self) -> dict[str, str]:
        # The token stays in this process: the gateway checks it, the server never needs it.
        env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
        bundled = pytriton_dir().parent.parent / "nvidia_pytriton.libs"
        libs = [str(bundled), str(sysconfig.get_config_var("LIBDIR"))]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        env["PATH"] = os.pathsep.join([str(self.config.python_bin), env.get("PATH", "")])
        # The stub's environment, not the one `glimp serve` runs in (they differ for the vLLM engine).
        env["VIRTUAL_ENV"] = str(self.config.python_bin.parent)
        env.setdefault("LANG", "C.UTF-8")  # torch, imported by vLLM, reads text files as the locale says
        return env

    def _readiness_target(self) -> ReadinessTarget:
        cfg = self.config
        tls_root = cfg.tls.cert if cfg.tls else None
        return ReadinessTarget(cfg.grpc_url, cfg.token, tls_root, cfg.tls_server_name, streamed=cfg.decoupled)

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.config.startup_timeout_s
        last_error = "no attempt yet"
        while time.perf_counter() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self._process.returncode} before it was ready; "
                    f"its log ends:\n{self.log_tail()}"
                )
            try:
                left_s = max(0.5, deadline - time.perf_counter())
                self.check_ready(min(self.config.ready_check_timeout_s, left_s))
                return
            except ReadinessError as exc:
                last_error = str(exc)
                time.sleep(0.2)
        raise ServerStartError(
            f"tritonserver was not ready after {self.config.startup_timeout_s:.0f} s (last readiness check: "
            f"{last_error}); its log ends:\n{self.log_tail()}"
        )


def _local_flags(cfg: ServerConfig, work_dir: Path, backends: Path | None = None) -> LocalServerFlags:
    return LocalServerFlags(
        backend_directory=str(backends or work_dir / "backends"), grpc_socket=str(work_dir / "triton.sock"),
        metrics_host=cfg.metrics_host, metrics_port=cfg.metrics_port,
        exit_timeout_s=max(1, int(cfg.stop_timeout_s) - 2), shm_prefix=cfg.shm_prefix,
    )


def _parent_death_hook() -> Callable[[], None] | None:
    # The signal follows the launching *thread*: from any other than the main thread (a test's
    # helper thread, the supervisor's) the server would die with that thread, so only there.
    return die_with_parent if threading.current_thread() is threading.main_thread() else None


def die_with_parent() -> None:
    """In a child, before exec: be killed when the thread that started us dies (PR_SET_PDEATHSIG).

    So a SIGKILLed `glimp serve` (or test, or benchmark) takes its tritonserver along; the stub
    wrapper below then takes the stubs. Used only for a server launched from the main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _prepare_backends(backends: Path) -> Path:
    """<backends>/python: PyTriton's backend library and utils (symlinked), the stub (a copy) and,
    in the stub's place, a wrapper that makes it die with its server (see _STUB_WRAPPER)."""
    source = pytriton_dir()
    python_dir = backends / "python"
    python_dir.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python_dir / name).symlink_to(source / "backends" / "python" / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"nvidia-pytriton ships no python-backend stub for Python {version}")
    # A copy, not a symlink: the backend looks for the stub beside its own library.
    real = python_dir / "triton_python_backend_stub.bin"
    shutil.copy2(stub, real)
    wrapper = python_dir / "triton_python_backend_stub"
    script = _STUB_WRAPPER.format(python=sys.executable, real=str(real), poll_s=_STUB_WATCH_S)
    wrapper.write_text(script, encoding="utf-8")
    wrapper.chmod(0o700)
    return backends


# The stub ignores SIGTERM and runs on under PID 1 when its server dies, and PR_SET_PDEATHSIG cannot
# help it (it fires when the *thread* that forked the stub ends: Triton's model-load thread). So
# the wrapper forks a watcher first (-S: no site import, a few ms) that polls the server and, once
# it is gone, kills the stub and removes its shared-memory region (argv[2]); it leaves quietly
# when the stub goes first (Triton then starts a new stub, with its own watcher).
_STUB_WRAPPER = """#!{python} -S
import os, signal, sys, time
server, stub, region = os.getppid(), os.getpid(), sys.argv[2] if len(sys.argv) > 2 else ""
def alive(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
if os.fork() == 0:
    os.closerange(3, 1024)
    while os.getppid() == stub:
        time.sleep({poll_s})
        if not alive(server):
            os.kill(stub, signal.SIGKILL)
            if region and "/" not in region:
                try:
                    os.unlink("/dev/shm/" + region)
                except OSError:
                    pass
            break
    os._exit(0)
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver pid %d ignored SIGTERM for %.0f s: killing it", process.pid, timeout_s)
    kill_group(process.pid)
    try:
        return process.wait(5.0)
    except subprocess.TimeoutExpired:
        return None


def kill_group(pgid: int) -> bool:
    """SIGKILL whatever is left of the server's process group (its stubs); True when something was.

    The stubs ignore SIGTERM and outlive a crashed server (under PID 1) unless killed. The group
    id stays valid while any member lives, so this is safe right after the server exited.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    log.info("killed what was left of tritonserver's process group %d", pgid)
    return True


def remove_shm_files(prefix: str) -> int:
    """Delete /dev/shm files a server with this shm-region prefix left behind; return how many."""
    if not prefix or not SHM_DIR.is_dir():
        return 0
    removed = 0
    for path in SHM_DIR.glob(f"{prefix}*"):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
