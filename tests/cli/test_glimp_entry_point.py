"""`glimp` itself: --version, --log-level on either side of the command, defaults in --help."""

from __future__ import annotations

import importlib.metadata
import logging
import signal
from typing import Any

import pytest

from glimprouter import cli
from glimprouter.cli import main


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"glimp {importlib.metadata.version('glimprouter')}"


def _levels(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    levels: list[Any] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: levels.append(kwargs["level"]))
    monkeypatch.delenv("GLIMP_SERVE_MODEL_DIR", raising=False)
    return levels


@pytest.mark.parametrize("argv", [["serve", "--log-level", "debug"], ["--log-level", "debug", "serve"]])
def test_log_level_is_accepted_before_and_after_the_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    levels = _levels(monkeypatch)
    assert main(argv) == 2  # serve without a model folder: a clear error, after logging is set up
    assert levels == ["DEBUG"]
    assert "give the LLM's folder" in capsys.readouterr().err


def test_log_level_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    levels = _levels(monkeypatch)
    monkeypatch.setenv("GLIMP_LOG_LEVEL", "INFO")
    assert main(["serve"]) == 2
    assert levels == ["INFO"]


def test_log_level_after_a_subcommand_of_a_command() -> None:
    parser = cli.command_parser("toy", "WARNING")
    assert parser.parse_args(["build", "--log-level", "ERROR"]).log_level == "ERROR"
    assert parser.parse_args(["--log-level", "INFO", "build"]).log_level == "INFO"
    assert parser.parse_args(["build"]).log_level == "WARNING"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_shows_every_default(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "(default: WARNING)" in out  # --log-level, on every command


def test_serve_help_shows_the_serving_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: 8001)", "(default: 2048.0)", "(default: 900.0)", "(default: 127.0.0.1)"):
        assert text in out


def test_a_bad_environment_twin_is_reported_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GLIMP_BENCH_LOOPBACK", "maybe")
    assert main(["bench", "--help"]) == 2
    assert "GLIMP_BENCH_LOOPBACK" in capsys.readouterr().err


def test_chat_leaves_the_callers_sigint_mask_as_it_found_it(capsys: pytest.CaptureFixture[str]) -> None:
    """glimp chat blocks SIGINT while its imports start threads; ended by --help or by an error, it
    must restore the mask: an in-process caller (and every child it starts) would lose Ctrl-C."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    assert main(["chat", "--llm-url", "bad"]) == 2
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == before
