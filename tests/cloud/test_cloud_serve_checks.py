"""`glimp serve` refuses what would fail later and looks like something else: an SLM folder, a
busy port, a listener that is not its own; a server that fails says why in one line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import CALL_TIMEOUT_S, start_server

from cloud_service.launcher import pick_free_port
from cloud_service.ports import owns_listener, port_in_use
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLLM
from glimprouter.cli import main


@pytest.fixture()
def listening() -> Iterator[int]:
    """A port this process listens on (as another server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _copy(model_dir: Path, dst: Path, **manifest: object) -> Path:
    shutil.copytree(model_dir, dst)
    path = dst / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    return dst


def _serve(*args: str) -> list[str]:
    return ["serve", *args, "--insecure-no-token", "--providers", "cpu"]


def test_serve_refuses_an_slm_folder(
    tiny_qwen3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slm = _copy(tiny_qwen3_dir, tmp_path / "small", role="slm")
    for extra in ([], ["--build-only", "--repository", str(tmp_path / "repo")]):
        assert main(_serve(str(slm), *extra)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "made for the SLM side" in err
        assert "given as the model to serve" in err
    assert not (tmp_path / "repo").exists()  # refused before anything was written


@pytest.mark.parametrize("flag", ["--grpc-port", "--metrics-port"])
def test_serve_refuses_a_busy_port_before_launching(
    tiny_qwen3_dir: Path, listening: int, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {"--grpc-port": pick_free_port(), "--metrics-port": pick_free_port(), flag: listening}
    assert main(_serve(str(tiny_qwen3_dir), *(str(x) for kv in ports.items() for x in kv))) == 2
    captured = capsys.readouterr()
    assert "ready" not in captured.out
    assert captured.err == (
        f"glimp serve: error: port {listening} on 127.0.0.1 ({flag}) is already in use by another process "
        f"(a glimp serve still running?); stop it or choose another {flag}\n")


def test_port_checks_see_listeners_and_their_owners(listening: int) -> None:
    assert port_in_use("127.0.0.1", listening) and not port_in_use("127.0.0.1", pick_free_port())
    assert owns_listener(os.getpid(), listening) is True
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        try:
            assert owns_listener(other.pid, listening) is False  # a process that does not hold it
        finally:
            other.kill()


@pytest.mark.triton
@pytest.mark.slow
def test_serve_on_the_port_of_a_running_server_fails_in_one_line(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """The issue's case: a second `glimp serve` on the port of a first one, same token."""
    token = new_token()
    first = start_server(tiny_qwen3_dir, tmp_path / "repo", token)
    try:
        port = first.grpc_url.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-m", "glimprouter.cli", "serve", str(tiny_qwen3_dir), "--grpc-port", port,
             "--metrics-port", str(pick_free_port()), "--providers", "cpu"],
            capture_output=True, text=True, env={**os.environ, "GLIMP_EDGE_TOKEN": token}, timeout=120,
        )
        assert done.returncode == 2 and "ready" not in done.stdout, done.stdout
        assert done.stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 (--grpc-port)" in done.stderr
        with TritonLLM(CloudLinkConfig(first.grpc_url, token, timeout_s=CALL_TIMEOUT_S)) as llm:
            assert llm.ready()  # the first server was left alone
    finally:
        first.stop()


@pytest.mark.triton
@pytest.mark.slow
def test_a_server_that_fails_to_start_prints_its_cause_and_log_in_one_line(
    tiny_qwen3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy(tiny_qwen3_dir, tmp_path / "broken")
    (broken / "model.onnx").write_bytes((tiny_qwen3_dir / "model.onnx").read_bytes()[:1000])
    log = tmp_path / "server.log"
    args = _serve(str(broken), "--grpc-port", str(pick_free_port()), "--metrics-port", str(pick_free_port()),
                  "--log-file", str(log), "--startup-timeout-s", "120")
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "ready" not in captured.out
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(
        "glimp serve: error: tritonserver exited with code 1 before it was ready: ")
    assert "is not a valid ONNX model" in captured.err and captured.err.endswith(f"; full log: {log}\n")
    assert log.stat().st_size > 0
