"""A new user's mistakes with `glimp run` show their cause: a cloud nobody answers at, a full context.

The cloud "down" here is a real one: a TCP port nobody listens on, reached over the real gRPC link.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_service.launcher import pick_free_port
from edge_client.run_command import CONTEXT_FULL_EXIT
from glimprouter.cli import main

SMALL = ["--max-step-tokens", "6", "--budget", "12", "--answer-max-tokens", "4", "--seed", "2",
         "--providers", "cpu"]
# Short deadlines: nothing listens, so the start check fails at once (connection refused).
QUICK_LINK = ["--llm-timeout-s", "5", "--retries", "0"]


def _run_cloud_down(slm_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`glimp run` as a user types it, the cloud URL pointing at a port nobody listens on."""
    url = f"127.0.0.1:{pick_free_port()}"
    command = [sys.executable, "-m", "glimprouter.cli", "run", "What is 12+30?", "--slm", str(slm_dir),
               "--llm-url", url, "--policy", "cloud", *SMALL, *QUICK_LINK, *extra]
    env = {**os.environ, "GLIMP_EDGE_TOKEN": "t" * 32}
    env.pop("GLIMP_OFFLINE_OK", None)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_a_cloud_unreachable_at_start_is_one_clear_error(slm_dir: Path) -> None:
    done = _run_cloud_down(slm_dir)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""  # no step was written: the check ran before any model work
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("glimp run: error: the cloud at 127.0.0.1:")
    assert "did not answer the start check" in lines[0] and "--offline-ok" in lines[0]


def test_offline_ok_degrades_with_one_log_line_and_a_banner(slm_dir: Path) -> None:
    done = _run_cloud_down(slm_dir, "--offline-ok")
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("[degraded H=")]
    assert len(steps) >= 2  # several degraded steps ...
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # ... and one line about the outage, not one per step
    assert lines[0].startswith("WARNING edge_client.link.breaker: cloud unreachable, the SLM writes alone")
    banner = f"answered partly offline: {len(steps)} steps degraded, the answer written by the SLM"
    assert banner in done.stdout


def test_the_offline_ok_flag_has_an_environment_twin(
    slm_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GLIMP_OFFLINE_OK", "1")
    monkeypatch.setenv("GLIMP_EDGE_TOKEN", "t" * 32)
    url = f"127.0.0.1:{pick_free_port()}"
    args = ["run", "What is 12+30?", "--slm", str(slm_dir), "--llm-url", url, "--policy", "cloud", *SMALL,
            *QUICK_LINK]
    assert main(args) == 0
    assert "answered partly offline" in capsys.readouterr().out
    monkeypatch.setenv("GLIMP_OFFLINE_OK", "0")
    assert main(args) == 2
    assert "did not answer the start check" in capsys.readouterr().err


def test_a_context_full_mid_reasoning_is_a_clear_error_and_a_non_zero_exit(
    forced: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The forced SLM writes "a" forever, no delimiter: the first step fills the context.
    code = main(["run", "What is 12+30?", "--slm", str(forced("slm", "a")), "--policy", "local",
                 "--answer-by", "slm", "--max-step-tokens", "2000", "--budget", "8192", "--providers", "cpu"])
    captured = capsys.readouterr()
    assert code == CONTEXT_FULL_EXIT != 0
    assert "thinking ended: context" in captured.out
    assert "answer: a" in captured.out  # the steps left room for a short answer
    assert "glimp run: error: the small model's context (512 tokens) filled up after 1 reasoning step," in (
        captured.err)
