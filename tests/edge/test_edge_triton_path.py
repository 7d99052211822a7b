"""The step loop through the real cloud path: a tritonserver serving the LLM, reached over gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from edge_helpers import CPU, reorder_vocabulary

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
from edge_client.trace import RunResult, StepRecord
from glimprouter.cli import main
from onnx_lm import ChatMessage, TextCodec
from onnx_lm.manifest import Manifest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

QUESTION = "What is 12+30?"
SETTINGS = StepSettings(max_step_tokens=10, budget_tokens=40, answer_max_tokens=8, seed=3)


@pytest.fixture(scope="module")
def token() -> str:
    return new_token()


@pytest.fixture(scope="module")
def cloud_llm_dir(llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama behind a tokenizer of its own (the SLM is a tiny Qwen3 with the char tokenizer)."""
    return reorder_vocabulary(llm_dir, tmp_path_factory.mktemp("cloud_llm") / "llm")


@pytest.fixture(scope="module")
def server(cloud_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           token: str) -> Iterator[TritonServer]:
    """The tiny Llama as the cloud LLM on a real tritonserver, with a random edge token."""
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    folder = tmp_path_factory.mktemp("edge_repo")
    with local_server(cloud_llm_dir, folder, token=token, settings=settings) as running:
        yield running


@pytest.fixture()
def cloud(server: TritonServer, token: str) -> Iterator[TritonLLM]:
    with TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=30.0)) as client:
        yield client


def mixed_run(router: EdgeRouter) -> RunResult:
    """The run of the first seed whose steps are on both sides.

    The seed goes to both models (the cloud samples under the config's seed): with random weights
    the first steps' entropies are fixed by the prompt, so only a different cloud text changes
    where the run goes next.
    """
    for seed in range(10):
        router.config = replace(router.config, steps=replace(router.config.steps, seed=seed))
        result = router.answer(QUESTION, rng=np.random.default_rng(seed))
        if {"edge", "cloud"} <= {s.writer for s in result.steps}:
            return result
    pytest.fail("no seed gave a run with steps on both sides")


def test_threshold_run_through_triton_counts_bytes_and_splits_time(slm_dir: Path, cloud: TritonLLM) -> None:
    router = EdgeRouter.from_folders(slm_dir, cloud, RouterConfig(EntropyThreshold(2.9), SETTINGS), CPU)
    result = mixed_run(router)
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
    # Only new text goes up: every call after the first carries the text since the last cloud
    # call plus a fixed message overhead (ids, base digest, sampling), never the whole transcript.
    calls = cloud_calls(result)
    assert len(calls) >= 2 and result.totals.traffic.resync_bytes_up == 0
    overheads = [c.bytes_up - len(c.new_text.encode()) for c in calls[1:]]
    assert max(overheads) - min(overheads) <= 4, overheads  # varint widths only
    assert all(c.bytes_up < c.bytes_up_full for c in calls[1:])


@dataclass(frozen=True)
class CloudCall:
    """One cloud step as the delta link sent it, rebuilt from the trace."""

    step: StepRecord
    transcript: str  # what the step's request carried in full
    new_text: str  # the part the server did not hold yet
    bytes_up: int
    bytes_up_full: int  # the same request with the whole transcript (a lower bound)


def cloud_calls(result: RunResult, delimiter: str = "\n\n") -> list[CloudCall]:
    """Each cloud step's transcript and new text: the server holds everything up to the end of the
    previous cloud step's own text (its reply was appended there)."""
    calls, held = [], None
    for i, step in enumerate(result.steps):
        if step.writer != "cloud":
            continue
        transcript = delimiter.join(s.text for s in result.steps[:i]) + (delimiter if i else "")
        new_text = transcript if held is None else transcript[len(held):]
        full = step.traffic.bytes_up - len(new_text.encode()) + len(transcript.encode())
        calls.append(CloudCall(step, transcript, new_text, step.traffic.bytes_up, full + 1))
        held = transcript + step.text
    return calls


def test_different_tokenizers_on_each_side_and_only_new_tokens_prefilled(
    slm_dir: Path, cloud_llm_dir: Path, cloud: TritonLLM
) -> None:
    slm_codec = TextCodec.load(slm_dir, Manifest.load(slm_dir))
    llm_codec = TextCodec.load(cloud_llm_dir, Manifest.load(cloud_llm_dir))
    sample = "Step 1: 12+30=42"
    assert slm_codec.encode(sample) != llm_codec.encode(sample)  # text is the interchange, not ids
    assert slm_codec.decode(slm_codec.encode(sample)) == llm_codec.decode(llm_codec.encode(sample)) == sample
    router = EdgeRouter.from_folders(slm_dir, cloud, RouterConfig(EntropyThreshold(2.9), SETTINGS), CPU)
    result = mixed_run(router)
    prompt = llm_codec.render_prompt([ChatMessage("user", QUESTION)])
    calls = cloud_calls(result)
    assert len(calls) >= 2
    for before, call in zip(calls, calls[1:], strict=False):
        held = len(llm_codec.encode(prompt + before.transcript + before.step.text))
        new_tokens = len(llm_codec.encode(prompt + call.transcript)) - held
        # The LLM's own tokens of the new text, plus at most the never-fed last generated token
        # and a re-tokenized boundary token.
        assert new_tokens <= call.step.llm_prefill_tokens <= new_tokens + 2, (call.new_text, new_tokens)


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
