"""Start the real tritonserver on a vLLM-engine repository with the cloud venv's Python.

The same recipe as cloud_service/launcher.py (notes/triton.md): a backend directory of our own
(PyTriton's python backend symlinked, the stub copied), LD_LIBRARY_PATH with the wheel's bundled
libraries and the interpreter's libpython, and the venv's bin/ first on PATH (the stub runs Python
isolated and takes its prefix from the first python3 there). Differences, for the vLLM engine:
ready means a real StepRequest answered over the *streaming* RPC (a decoupled model refuses unary
infer), the start-up timeout is minutes (vLLM loads the model and sizes its KV), and `stop` can send
any signal to the server alone, so tests can prove that nothing outlives it.

Self-contained on purpose (the coordinator folds it into the launcher); the tritonserver binary is
the one in `venv`'s nvidia-pytriton, so the test process itself may run in another environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from protos import edge_cloud_v1_pb2 as pb

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-cloud"


def pick_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_python_version(venv: Path) -> str:
    lib = next((venv / "lib").glob("python3.*"))
    return lib.name.removeprefix("python")


def base_libdir(venv: Path) -> Path:
    """Where the venv's base interpreter keeps libpython3.X.so (the stub must link that one)."""
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).parent / "lib"
    return Path(str(sysconfig.get_config_var("LIBDIR")))


def pytriton_dir(venv: Path) -> Path:
    version = venv_python_version(venv)
    return venv / "lib" / f"python{version}" / "site-packages" / "pytriton" / "tritonserver"


@dataclass
class VllmServerConfig:
    repository: Path
    venv: Path = DEFAULT_VENV
    grpc_port: int = field(default_factory=pick_free_port)
    metrics_port: int = field(default_factory=pick_free_port)
    startup_timeout_s: float = 600.0
    exit_timeout_s: int = 30  # tritonserver's --exit-timeout-secs
    log_file: Path | None = None
    shm_prefix: str = field(default_factory=lambda: f"glimpv_{secrets.token_hex(6)}_")

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


class VllmTritonServer:
    def __init__(self, config: VllmServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self.exited_by_itself: bool | None = None  # set by stop(): False when SIGKILL was needed
        self._work = Path(tempfile.mkdtemp(prefix="glimp_vllm_triton_"))
        self.log_path = config.log_file or self._work / "tritonserver.log"

    # -- start ----------------------------------------------------------------------------------

    def command(self, backends: Path) -> list[str]:
        cfg = self.config
        return [
            str(pytriton_dir(cfg.venv) / "bin" / "tritonserver"),
            f"--model-repository={Path(cfg.repository).resolve()}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit", "--load-model=glimp_llm",
            "--disable-auto-complete-config", "--strict-readiness=true",
            "--allow-http=false", "--grpc-address=127.0.0.1", f"--grpc-port={cfg.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={cfg.metrics_port}",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={cfg.shm_prefix}",
        ]

    def environment(self) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        bundled = pytriton_dir(cfg.venv).parent.parent / "nvidia_pytriton.libs"
        libs = [str(bundled), str(base_libdir(cfg.venv))]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        env["PATH"] = os.pathsep.join([str(cfg.venv / "bin"), env.get("PATH", "")])
        env.setdefault("LANG", "C.UTF-8")
        env.pop("VIRTUAL_ENV", None)
        return env

    def prepare_backends(self) -> Path:
        source = pytriton_dir(self.config.venv)
        python_dir = self._work / "backends" / "python"
        python_dir.mkdir(parents=True)
        for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
            (python_dir / name).symlink_to(source / "backends" / "python" / name)
        version = venv_python_version(self.config.venv)
        stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, python_dir / "triton_python_backend_stub")  # a copy: found beside the library
        return self._work / "backends"

    def start(self) -> float:
        started = time.perf_counter()
        backends = self.prepare_backends()
        with open(self.log_path, "ab") as log_handle:
            self.process = subprocess.Popen(self.command(backends), stdout=log_handle,
                                            stderr=subprocess.STDOUT, env=self.environment(),
                                            start_new_session=True)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        return self.ready_s

    def _wait_ready(self, started: float) -> None:
        from cloud_service.vllm.stream_client import StreamClient

        deadline = started + self.config.startup_timeout_s
        last = "no attempt yet"
        while time.perf_counter() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with StreamClient(self.config.grpc_url, timeout_s=30.0) as client:
                    reply = client.call(probe_request(), timeout_s=30.0)
                if reply.HasField("result"):
                    return
                last = str(reply)
            except Exception as exc:  # not up yet: connection refused, model not loaded
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(1.0)
        raise RuntimeError(f"not ready after {self.config.startup_timeout_s:.0f} s ({last}):\n"
                           f"{self.log_tail()}")

    # -- processes ------------------------------------------------------------------------------

    def tree_pids(self) -> list[int]:
        """The server and every descendant of it (stub, EngineCore, workers), from /proc."""
        if self.process is None:
            return []
        return descendants(self.process.pid, include_self=True)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        """Send `sig` to tritonserver alone and wait; after `timeout_s` SIGKILL it (alone, again).

        tritonserver 2.51 does not exit on SIGTERM while a client holds a ModelStreamInfer stream
        open (it never unloads the model, then hangs past its exit timeout); its gRPC graceful
        shutdown timer came in a later release. So a stop is SIGTERM, then SIGKILL of the server;
        the stub follows its server within about a second and the engine processes follow the stub
        (PR_SET_PDEATHSIG, hygiene.py). Nothing else is signalled, which is what the tests check.
        """
        code = None
        self.exited_by_itself = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    code = self.process.wait(timeout_s)
                    self.exited_by_itself = True
                except subprocess.TimeoutExpired:
                    self.exited_by_itself = False
                    self.process.kill()
                    code = self.process.wait(10)
            else:
                code = self.process.returncode
        for path in Path("/dev/shm").glob(f"{self.config.shm_prefix}*"):
            path.unlink(missing_ok=True)
        return code

    def cleanup(self) -> None:
        """Last resort for tests: kill whatever is left of the server's process group, remove the work dir."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self._work, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def probe_request() -> pb.StepRequest:
    """A one-token write on a throw-away context: proves the model answers through the contract."""
    return pb.StepRequest(protocol_version=1, context_id=secrets.token_hex(16),
                          client_key=secrets.token_bytes(32), create=True,
                          messages=[pb.ChatMessage(role="user", content="1+1")],
                          action=pb.WRITE_STEP, max_tokens=1)


def descendants(pid: int, include_self: bool = False) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found if include_self else found[1:]


def alive(pids: list[int]) -> list[int]:
    """The pids that still exist and are not zombies."""
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            living.append(pid)
    return living


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
