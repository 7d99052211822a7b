"""`glimp run` and `glimp calibrate` through the real console entry point."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from edge_helpers import set_manifest

from glimprouter.cli import main

SMALL = [
    "--max-step-tokens",
    "8",
    "--budget",
    "32",
    "--answer-max-tokens",
    "6",
    "--seed",
    "2",
    "--providers",
    "cpu",
]


def test_run_streams_marked_steps_then_the_summary_and_writes_the_trace(
    slm_dir: Path, llm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.json"
    code = main(
        [
            "run",
            "What is 12+30?",
            "--slm",
            str(slm_dir),
            "--llm-local",
            str(llm_dir),
            "--policy",
            "threshold",
            "--tau",
            "2.9",
            "--json",
            str(trace),
            *SMALL,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(trace.read_text())
    marks = re.findall(r"^\[(edge|cloud|degraded) H=(\d+\.\d\d)\] ", out, flags=re.MULTILINE)
    assert [(w, float(h)) for w, h in marks] == [
        (s["writer"], round(s["entropy_nats"], 2)) for s in data["steps"]
    ]
    assert f"[answer by {data['answer_writer']}]" in out
    for line in ("steps: ", "tokens: SLM ", "bytes: up ", "time: edge compute ", "wall "):
        assert line in out
    assert data["question"] == "What is 12+30?" and data["totals"]["steps"] == len(data["steps"])


def test_every_flag_has_an_environment_twin(
    slm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "env.json"
    env = {
        "GLIMP_QUESTION": "Name a colour.",
        "GLIMP_SLM": str(slm_dir),
        "GLIMP_POLICY": "local",
        "GLIMP_ANSWER_BY": "slm",
        "GLIMP_MAX_STEP_TOKENS": "5",
        "GLIMP_BUDGET": "10",
        "GLIMP_ANSWER_MAX_TOKENS": "4",
        "GLIMP_SEED": "1",
        "GLIMP_TEMPERATURE": "0.8",
        "GLIMP_TOP_P": "0.9",
        "GLIMP_PROVIDERS": "cpu",
        "GLIMP_TRACE_JSON": str(trace),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["run"]) == 0
    data = json.loads(trace.read_text())
    assert data["question"] == "Name a colour." and data["answer_writer"] == "edge"
    assert all(s["writer"] == "edge" and s["slm_tokens"] <= 5 for s in data["steps"])
    assert "providers: slm CPUExecutionProvider" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tau", "nan"], "tau must be a finite number"),
        (["--tau", "-1"], "tau must be a finite number"),
        (["--policy", "random", "--share", "1.5"], r"share of cloud steps must be a number in \[0, 1\]"),
        (["--policy", "share"], "needs a calibration file"),
        (["--llm-url", "localhost:1"], "either --llm-url"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(
    slm_dir: Path, llm_dir: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "q?", "--slm", str(slm_dir), "--llm-local", str(llm_dir), *extra])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_run_checks_the_question_and_folders_before_loading(
    slm_dir: Path, llm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "", "--slm", str(slm_dir), "--llm-local", str(llm_dir)]) == 2
    assert "question is empty" in capsys.readouterr().err
    big = set_manifest(Path(shutil.copytree(llm_dir, tmp_path / "big")), role="llm")
    small = set_manifest(Path(shutil.copytree(slm_dir, tmp_path / "small")), role="slm")
    assert main(["run", "q?", "--slm", str(big), "--llm-local", str(small)]) == 2
    assert "made for the LLM side" in capsys.readouterr().err
    assert main(["run", "q?", "--slm", str(small), "--llm-local", str(small)]) == 2
    assert "made for the SLM side" in capsys.readouterr().err
    assert (
        main(["run", "q?", "--slm", str(tmp_path / "nowhere"), "--policy", "local", "--answer-by", "slm"])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "x" * 600, "--slm", str(slm_dir), "--policy", "local", "--answer-by", "slm"]) == 2
    assert "shorten the question" in capsys.readouterr().err
    assert main(["run", "q?", "--slm", str(slm_dir)]) == 2
    assert "needs the large model" in capsys.readouterr().err


def test_calibrate_then_run_with_a_target_share(
    slm_dir: Path, llm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": str(i), "question": q}) + "\n"
            for i, q in enumerate(["What is 2+2?", "Why?", "Name a colour."])
        )
    )
    calibration = tmp_path / "calibration.json"
    code = main(
        [
            "calibrate",
            "--slm",
            str(slm_dir),
            "--questions",
            str(questions),
            "--share",
            "0.4",
            "--out",
            str(calibration),
            *SMALL,
        ]
    )
    assert code == 0
    assert re.search(r"tau \d+\.\d+ nats sends 40% of \d+ steps \(3 questions\)", capsys.readouterr().out)
    assert json.loads(calibration.read_text())["target_share"] == 0.4
    code = main(
        [
            "run",
            "What is 2+2?",
            "--slm",
            str(slm_dir),
            "--llm-local",
            str(llm_dir),
            "--policy",
            "share",
            "--calibration",
            str(calibration),
            *SMALL,
        ]
    )
    assert code == 0
    assert "policy: share 40% of steps (tau " in capsys.readouterr().out
    assert main(["calibrate", "--slm", str(slm_dir), "--questions", str(questions), "--share", "-0.5"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
