"""`glimp serve DIR --replicas N`: one endpoint before N real replicas, stopped cleanly, flags checked."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scale_helpers import needs_nginx

from cloud_service.launcher import pick_free_port
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLLM
from glimprouter.cli import main


@pytest.mark.parametrize("flags, match", [
    (["--replicas", "0"], "--replicas must be between 1 and 64, got 0"),
    (["--replicas", "2", "--repository", "repo"], "drop --repository"),
])
def test_bad_replica_flags_are_refused_before_anything_starts(
        tiny_qwen3_dir: Path, flags: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tiny_qwen3_dir), "--insecure-no-token", *flags]) == 2
    assert match in capsys.readouterr().err


@needs_nginx
@pytest.mark.slow
@pytest.mark.triton
def test_serve_replicas_from_the_environment_prints_one_endpoint_and_stops_everything(
        tiny_qwen3_dir: Path) -> None:
    token, port = new_token(), pick_free_port()
    env = {**os.environ, "GLIMP_EDGE_TOKEN": token, "GLIMP_REPLICAS": "2", "GLIMP_INTRA_OP_THREADS": "1"}
    serve = subprocess.Popen([sys.executable, "-m", "glimprouter.cli", "serve", str(tiny_qwen3_dir),
                              "--grpc-port", str(port)], env=env, stdout=subprocess.PIPE, text=True)
    assert serve.stdout is not None
    lines = []
    try:
        for line in serve.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        printed = "".join(lines)
        assert "ready on 2 replicas" in printed and f"gRPC     127.0.0.1:{port}" in printed, printed
        replica_ports = [int(p) for p in re.findall(r"replica \d  127\.0\.0\.1:(\d+)", printed)]
        assert len(replica_ports) == 2 and port not in replica_ports
        with TritonLLM(CloudLinkConfig(f"127.0.0.1:{port}", token, timeout_s=10.0)) as llm:
            assert llm.ping() > 0
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(60.0)
        except subprocess.TimeoutExpired:
            serve.kill()  # nginx follows it (parent-death signal); the test fails below
            code = serve.wait()
    assert code == 0
    for closed in [port, *replica_ports]:  # nginx and both replicas are gone
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", closed), 1.0).close()
