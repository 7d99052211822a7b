"""Supervision and orphans on real processes (issue 12, findings 3 and 4).

A killed stub is found by a real inference and healed by a reload; a killed tritonserver takes
its stubs along and is restarted; SIGTERM or SIGKILL of the process that owns a server leaves
nothing running. Process ids are read from /proc: the server's stubs are the members of its
process group running the stub binary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cloud_helpers import CALL_TIMEOUT_S, MESSAGES, shm_files

from cloud_service.launcher import TritonServer
from cloud_service.security import new_token
from cloud_service.supervisor import HEAL_RELOAD, HEAL_RESTART, Supervisor, SupervisorConfig
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY

pytestmark = [pytest.mark.triton, pytest.mark.slow]

STUB_BINARY = "triton_python_backend_stub.bin"  # the real stub behind the launcher's wrapper
GONE_WITHIN_S = 15.0  # how long a test waits for a process to disappear (an event, not a measure)


def stubs_of(pgid: int) -> list[int]:
    """Live stub processes in process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[2]) == pgid and STUB_BINARY.encode() in cmdline.split(b"\0")[0]:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int]) -> list[int]:
    """Wait until none of `pids` lives (or GONE_WITHIN_S passed); the ones still alive."""
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def one_step(server: TritonServer, token: str) -> str:
    with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=CALL_TIMEOUT_S)) as llm:
        return llm.open(MESSAGES).call(LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=8)).text


def server_ready(server: TritonServer) -> bool:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return bool(client.is_server_ready(client_timeout=CALL_TIMEOUT_S))


class ObservingSupervisor(Supervisor):
    """Records what the gateway says about readiness while a heal runs."""

    ready_while_healing: list[bool]

    def _heal(self) -> str:
        self.ready_while_healing = [*getattr(self, "ready_while_healing", []), server_ready(self.server)]
        return super()._heal()


def test_a_killed_stub_is_found_by_a_real_inference_and_reloaded(
    own_server: tuple[TritonServer, str], record_property: pytest.RecordProperty
) -> None:
    server, token = own_server
    before = one_step(server, token)
    (stub,) = stubs_of(server.pid or 0)
    supervisor = ObservingSupervisor(server, SupervisorConfig(period_s=0.5, check_timeout_s=5.0))
    killed_s = time.monotonic()
    os.kill(stub, signal.SIGKILL)
    supervisor.start()
    try:
        assert supervisor.wait_heal(1, timeout_s=60.0)
    finally:
        supervisor.stop()
    heal = supervisor.history[0]
    record_property("stub_kill_to_detected_s", round(heal.detected_s - killed_s, 2))
    record_property("stub_kill_to_healed_s", round(heal.healed_s - killed_s, 2))
    assert supervisor.heals == {HEAL_RELOAD: 1}
    assert "not healthy" in heal.cause or "Stub" in heal.cause
    assert supervisor.ready_while_healing == [False]
    assert server_ready(server)
    assert stubs_of(server.pid or 0) not in ([], [stub])  # a new stub serves
    assert one_step(server, token) == before  # greedy: the same text from the reloaded model


def test_a_killed_server_takes_its_stubs_and_is_restarted(own_server: tuple[TritonServer, str]) -> None:
    server, token = own_server
    before = one_step(server, token)
    old_pid = server.pid or 0
    stubs = stubs_of(old_pid)
    assert stubs
    os.kill(old_pid, signal.SIGKILL)
    assert wait_gone(stubs) == []  # the stub's watcher saw the server go; nothing under PID 1
    supervisor = Supervisor(server, SupervisorConfig(check_timeout_s=5.0))
    heal = supervisor.check_once()
    assert heal is not None and heal.kind == HEAL_RESTART
    assert server.pid != old_pid
    assert one_step(server, token) == before
    assert supervisor.check_once() is None  # healthy again: nothing to do


_OWNER = textwrap.dedent("""
    import sys, time
    from cloud_service.launcher import local_server, sigterm_unwinds
    with sigterm_unwinds(), local_server(sys.argv[1], sys.argv[2], token=None) as server:
        print(server.pid, server.config.shm_prefix, server.log_path.parent, flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_owner_leaves_nothing_running(tiny_qwen3_dir: Path, tmp_path: Path, sig: int) -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(tiny_qwen3_dir), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pid_text, shm_prefix, work_dir = owner.stdout.readline().split()
        server_pid = int(pid_text)
        stubs = stubs_of(server_pid)
        assert stubs and _alive(server_pid)
        owner.send_signal(sig)
        owner.wait(60)
        assert wait_gone([server_pid, *stubs]) == []
        if sig == signal.SIGTERM:  # unwound: the launcher's cleanup ran
            assert owner.returncode != 0 and shm_files(shm_prefix) == []
            assert not Path(work_dir).exists()
    finally:
        if owner.poll() is None:
            owner.kill()


def _children(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if ppid == pid and argv0.endswith(name.encode()):
                found.append(int(entry.name))
    return found


def test_glimp_serve_heals_a_killed_stub_and_leaves_nothing_at_sigterm(tiny_qwen3_dir: Path) -> None:
    import threading

    from cloud_service.launcher import pick_free_port

    token, grpc_port = new_token(), pick_free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "glimprouter.cli", "serve", str(tiny_qwen3_dir), "--grpc-port", str(grpc_port),
         "--metrics-port", str(pick_free_port()), "--check-period-s", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "GLIMP_EDGE_TOKEN": token},
    )
    lines: list[str] = []
    ready, healed = threading.Event(), threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                ready.set()
            if "healed by reload" in line:
                healed.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(120), "".join(lines)
        (server_pid,) = _children(process.pid, "tritonserver")
        (stub,) = stubs_of(server_pid)
        os.kill(stub, signal.SIGKILL)
        assert healed.wait(60), "".join(lines[-20:])
        config = CloudLinkConfig(f"127.0.0.1:{grpc_port}", token, timeout_s=CALL_TIMEOUT_S)
        with TritonLLM(config) as llm:
            assert llm.ready()
        new_stubs = stubs_of(server_pid)
        assert new_stubs and stub not in new_stubs
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert wait_gone([server_pid, *new_stubs]) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
