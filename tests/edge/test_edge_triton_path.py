"""The step loop through the real cloud path: a tritonserver serving the LLM, reached over gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from edge_helpers import CPU

from cloud_service.launcher import TritonServer, local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client import (
    EdgeRouter,
    EntropyThreshold,
    NotAuthorizedError,
    RouterConfig,
    StepSettings,
    VerifyByScore,
)
from edge_client.link import CloudLinkConfig, TritonLLM
from glimprouter.cli import main

pytestmark = [pytest.mark.triton, pytest.mark.slow]

QUESTION = "What is 12+30?"
SETTINGS = StepSettings(max_step_tokens=10, budget_tokens=40, answer_max_tokens=8, seed=3)


@pytest.fixture(scope="module")
def token() -> str:
    return new_token()


@pytest.fixture(scope="module")
def server(llm_dir: Path, tmp_path_factory: pytest.TempPathFactory, token: str) -> Iterator[TritonServer]:
    """The tiny Llama as the cloud LLM on a real tritonserver, with a random edge token."""
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    folder = tmp_path_factory.mktemp("edge_repo")
    with local_server(llm_dir, folder, token=token, settings=settings) as running:
        yield running


@pytest.fixture()
def cloud(server: TritonServer, token: str) -> Iterator[TritonLLM]:
    with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=30.0)) as client:
        yield client


def test_threshold_run_through_triton_counts_bytes_and_splits_time(slm_dir: Path, cloud: TritonLLM) -> None:
    router = EdgeRouter.from_folders(slm_dir, cloud, RouterConfig(EntropyThreshold(2.9), SETTINGS), CPU)
    for seed in range(10):  # the first seed whose run has steps on both sides
        result = router.answer(QUESTION, rng=np.random.default_rng(seed))
        if {"edge", "cloud"} <= {s.writer for s in result.steps}:
            break
    else:
        pytest.fail("no seed gave a run with steps on both sides")
    cloud_steps = [s for s in result.steps if s.writer == "cloud"]
    for step in cloud_steps:
        assert step.traffic.bytes_up > 0 and step.traffic.bytes_down > 0 and step.traffic.calls == 1
        assert step.timing.cloud_compute_s > 0 and step.llm_tokens > 0 and step.wasted_tokens == 1
        assert step.timing.wall_s >= step.timing.network_s + step.timing.cloud_compute_s
    assert all(s.traffic.bytes_up == 0 for s in result.steps if s.writer == "edge")
    assert result.answer_writer == "cloud" and result.answer_record.traffic.bytes_down > 0
    assert result.totals.traffic.bytes_up == sum(s.traffic.bytes_up for s in result.steps) + (
        result.answer_record.traffic.bytes_up
    )
    assert result.providers["llm"] == "triton"
    # Only new text goes up: later cloud calls carry far less than the whole transcript.
    assert result.totals.traffic.resync_bytes_up == 0


def test_verify_policy_scores_drafts_on_the_server(slm_dir: Path, cloud: TritonLLM) -> None:
    router = EdgeRouter.from_folders(slm_dir, cloud, RouterConfig(VerifyByScore(-100.0), SETTINGS), CPU)
    result = router.answer(QUESTION)
    assert all(s.decision == "draft:accept" and s.signal is not None and s.signal < 0 for s in result.steps)
    assert all(s.traffic.calls == 1 and s.traffic.bytes_up > 0 for s in result.steps)


def test_glimp_run_with_the_cloud_url(
    slm_dir: Path,
    server: TritonServer,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = tmp_path / "trace.json"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    args = ["run", QUESTION, "--slm", str(slm_dir), "--llm-url", server.grpc_url, "--policy", "cloud"]
    small = ["--max-step-tokens", "6", "--budget", "12", "--answer-max-tokens", "4", "--providers", "cpu"]
    assert main([*args, *small, "--token-file", str(token_file), "--json", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "[cloud H=" in out and "providers: slm CPUExecutionProvider, llm triton" in out
    data = json.loads(trace.read_text())
    assert data["totals"]["traffic"]["bytes_up"] > 0 and data["totals"]["cloud_steps"] == len(data["steps"])
    # The token can come from the environment too; a wrong one is a clear error, not a silent fallback.
    monkeypatch.setenv("GLIMP_EDGE_TOKEN", "not-the-right-token-at-all")
    assert main([*args, *small]) == 2
    assert "token" in capsys.readouterr().err.lower()


def test_a_wrong_token_is_not_hidden_by_degraded_mode(slm_dir: Path, server: TritonServer) -> None:
    wrong = TritonLLM(CloudLinkConfig(server.grpc_url, "x" * 32, timeout_s=30.0))
    router = EdgeRouter.from_folders(slm_dir, wrong, RouterConfig(EntropyThreshold(0.0), SETTINGS), CPU)
    with pytest.raises(NotAuthorizedError):
        router.answer(QUESTION)
    wrong.close()
