"""`glimp serve`, the repository builder, eviction under a small budget, and TLS, on real servers."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from cloud_helpers import CALL_TIMEOUT_S, MESSAGES, metric, shm_files, start_server

from cloud_service import commands
from cloud_service.repository import RepositorySettings, build_repository
from cloud_service.security import TLSFiles, new_token
from edge_client.errors import CloudUnavailableError
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from glimp_common.errors import BadInputError
from onnx_lm import GREEDY


def test_a_copied_repository_is_self_contained(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    settings = RepositorySettings(cache_budget_bytes=12345, idle_ttl_s=7.5, providers="cpu")
    repository = build_repository(tiny_qwen3_dir, tmp_path / "repo", settings)
    model = repository / "glimp_llm"
    assert (model / "1" / "model.py").is_file() and not (model / "llm").is_symlink()
    assert (model / "llm" / "model.onnx").is_file() and (model / "llm" / "manifest.json").is_file()
    config = (model / "config.pbtxt").read_text()
    for value in ('"12345"', '"7.5"', '"cpu"', 'string_value: "llm"', "KIND_CPU", "max_batch_size: 0"):
        assert value in config
    with pytest.raises(BadInputError, match="already exists"):
        build_repository(tiny_qwen3_dir, tmp_path / "repo", settings)


def test_serve_refuses_to_start_without_a_token(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GLIMP_EDGE_TOKEN", "GLIMP_EDGE_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    parser = argparse.ArgumentParser()
    commands.configure_parser(parser)
    with pytest.raises(BadInputError, match="--insecure-no-token"):
        commands.run(parser.parse_args([str(tiny_qwen3_dir)]))


def _read_until_ready(process: subprocess.Popen[str], timeout_s: float) -> str:
    """stdout of `glimp serve` up to its "Ctrl-C" line (the endpoints are printed by then)."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return "".join(lines)


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_starts_answers_and_stops_cleanly(tiny_qwen3_dir: Path, stop_signal: signal.Signals) -> None:
    from cloud_service.launcher import pick_free_port

    token, grpc_port, metrics_port = new_token(), pick_free_port(), pick_free_port()
    env = {**os.environ, "GLIMP_EDGE_TOKEN": token}
    process = subprocess.Popen(
        [sys.executable, "-m", "glimprouter.cli", "serve", str(tiny_qwen3_dir),
         "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        output = _read_until_ready(process, timeout_s=120)
        assert re.search(r"ready in \d+\.\d s", output), output
        assert f"127.0.0.1:{grpc_port}" in output and f"127.0.0.1:{metrics_port}/metrics" in output
        prefix = re.search(r"/dev/shm/(\S+)\*", output).group(1)  # type: ignore[union-attr]
        config = CloudLinkConfig(f"127.0.0.1:{grpc_port}", token, timeout_s=CALL_TIMEOUT_S)
        with TritonLLM(config) as llm:
            assert llm.ready()
        assert b"glimp_context_cache_bytes" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
        assert shm_files(prefix) == []
        with TritonLLM(CloudLinkConfig(f"127.0.0.1:{grpc_port}", token, timeout_s=2.0)) as llm:
            assert not llm.ready()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.triton
@pytest.mark.slow
def test_a_small_budget_evicts_old_contexts_and_bounds_memory(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    budget = 400_000  # bytes: about two contexts of ~190 tokens (1 KiB of KV per token)
    token = new_token()
    server = start_server(tiny_qwen3_dir, tmp_path, token, cache_budget_bytes=budget)
    try:
        with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=CALL_TIMEOUT_S)) as llm:
            transcript = "Step 1: a line of reasoning that takes up some room. " * 3
            conversations = [llm.open(MESSAGES) for _ in range(8)]
            for conversation in conversations:
                conversation.call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))
            held_bytes = metric(server.metrics_url, "glimp_context_cache_bytes")
            assert 0 < held_bytes <= budget
            assert metric(server.metrics_url, "glimp_context_cache_contexts") <= 3
            assert metric(server.metrics_url, "glimp_context_cache_evictions_total", 'reason="budget"') >= 5
            again = conversations[0].call(LLMRequest(LLMAction.ABSORB, transcript + "more", GREEDY))
            assert again.cost.resynced  # it was evicted: the server said UNKNOWN_CONTEXT, the client resent
    finally:
        server.stop()
    assert shm_files(server.config.shm_prefix) == []


@pytest.mark.triton
@pytest.mark.slow
def test_tls_on_grpc(tiny_qwen3_dir: Path, tmp_path: Path, self_signed_cert: TLSFiles) -> None:
    token = new_token()
    server = start_server(tiny_qwen3_dir, tmp_path, token, tls=self_signed_cert)
    try:
        secure = CloudLinkConfig(server.grpc_url, token, timeout_s=CALL_TIMEOUT_S,
                                 tls_root_cert=self_signed_cert.cert, gzip=True)
        with TritonLLM(secure) as llm:
            reply = llm.open(MESSAGES).call(LLMRequest(LLMAction.WRITE_STEP, "Step 1:", GREEDY, max_tokens=4))
            assert reply.cost.decode_tokens >= 1
        plain = CloudLinkConfig(server.grpc_url, token, timeout_s=5.0)
        with TritonLLM(plain) as llm, pytest.raises(CloudUnavailableError):
            llm.open(MESSAGES).call(LLMRequest(LLMAction.ABSORB, "hi", GREEDY))
    finally:
        server.stop()
