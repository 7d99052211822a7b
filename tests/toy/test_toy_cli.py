"""`glimp toy ...` through the real entry point: outputs, env twins and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimprouter.cli import main


def test_data_writes_the_held_out_sets(tmp_path: Path) -> None:
    assert main(["toy", "data", "--out", str(tmp_path), "--dev", "3", "--test", "4"]) == 0
    assert len((tmp_path / "data" / "dev.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "data" / "test.jsonl").read_text().splitlines()) == 4


def test_flags_have_environment_twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMP_TOY_OUT", str(tmp_path))
    monkeypatch.setenv("GLIMP_TOY_DEV", "2")
    monkeypatch.setenv("GLIMP_TOY_TEST", "1")
    assert main(["toy", "data"]) == 0
    assert len((tmp_path / "data" / "dev.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["toy", "data", "--max-ops", "0"], "max_ops must be >= 2"),
        (["toy", "data", "--min-ops", "0"], "min_ops must be >= 1"),
        (["toy", "data", "--dev", "-3"], "number of dev problems must be >= 1"),
        (["toy", "train", "--hidden", "-4"], "hidden must be >= 1"),
        (["toy", "train", "--steps", "0"], "steps must be >= 1"),
        (["toy", "train", "--device", "tpu"], "device must be"),
    ],
)
def test_impossible_settings_fail_with_a_message(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_a_seed_that_is_not_an_integer_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "data", "--seed", "1.5"])
    assert exit_info.value.code == 2
    assert "'1.5' is not an integer" in capsys.readouterr().err
