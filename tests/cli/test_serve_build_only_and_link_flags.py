"""Two README promises no other test held: `glimp serve --build-only` writes a self-contained
repository and prints the production command; the resilience flags and their environment twins
reach the cloud link `glimp run` builds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cloud_service.commands import production_flags
from edge_client import run_command
from edge_client.link import ResilientLLM
from glimprouter.cli import main
from onnx_lm import SessionConfig
from protos.contract import MODEL_NAME


def test_build_only_writes_a_self_contained_repository_and_the_production_command(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "repo"
    code = main(["serve", str(tiny_llama_dir), "--build-only", "--repository", str(repository),
                 "--cache-budget-mb", "64", "--idle-ttl-s", "120"])
    out = capsys.readouterr().out
    assert code == 0
    model = repository / MODEL_NAME
    # Self-contained: the model is a copy (a container mounts this folder alone), not a link.
    assert not (model / "llm").is_symlink() and (model / "1" / "model.py").is_file()
    assert json.loads((model / "llm" / "manifest.json").read_text()) == json.loads(
        (tiny_llama_dir / "manifest.json").read_text())
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert config.name == MODEL_NAME and config.backend == "python"
    assert parameters["CACHE_BUDGET_BYTES"] == str(64 << 20) and float(parameters["IDLE_TTL_S"]) == 120.0
    # The printed command serves that repository with the same server flags the code renders.
    assert f"-v {repository.resolve()}:/models" in out
    for flag in production_flags().args():
        assert flag in out, flag


def test_build_only_without_a_repository_says_so(
    tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", str(tiny_llama_dir), "--build-only"]) == 2
    assert "--build-only needs --repository" in capsys.readouterr().err


def _run_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_command.configure_parser(parser)
    return parser.parse_args(argv)


def _link(args: argparse.Namespace) -> ResilientLLM:
    llm = run_command.llm_backend(args, SessionConfig(providers="cpu"))
    assert isinstance(llm, ResilientLLM)
    return llm


def test_resilience_flags_reach_the_link() -> None:
    args = _run_args(["q", "--llm-url", "127.0.0.1:1", "--retries", "5", "--breaker-s", "1.5",
                      "--keepalive-s", "12", "--llm-timeout-s", "7", "--gzip", "--background-sync"])
    with _link(args) as llm:  # no traffic before the first open()
        assert llm.config.retry.max_retries == 5 and llm.config.breaker_s == 1.5
        assert llm.config.background_sync
        link = llm.llm.config
        assert (link.keepalive_time_s, link.timeout_s, link.gzip) == (12.0, 7.0, True)


def test_resilience_env_twins_reach_the_link(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"GLIMP_RETRIES": "4", "GLIMP_BREAKER_S": "3.5", "GLIMP_KEEPALIVE_S": "9",
                        "GLIMP_LLM_TIMEOUT_S": "8", "GLIMP_GZIP": "yes", "GLIMP_BACKGROUND_SYNC": "1",
                        "GLIMP_LLM_URL": "127.0.0.1:2"}.items():
        monkeypatch.setenv(name, value)
    with _link(_run_args(["q"])) as llm:
        assert llm.config.retry.max_retries == 4 and llm.config.breaker_s == 3.5
        assert llm.config.background_sync
        link = llm.llm.config
        assert (link.url, link.keepalive_time_s, link.timeout_s, link.gzip) == ("127.0.0.1:2", 9.0, 8.0, True)


def test_defaults_without_flags_or_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GLIMP_RETRIES", "GLIMP_BREAKER_S", "GLIMP_GZIP", "GLIMP_BACKGROUND_SYNC"):
        monkeypatch.delenv(name, raising=False)
    with _link(_run_args(["q", "--llm-url", "127.0.0.1:1"])) as llm:
        assert llm.config.retry.max_retries == 2 and llm.config.breaker_s == 2.0
        assert not llm.config.background_sync and not llm.llm.config.gzip
