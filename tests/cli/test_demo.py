"""`glimp demo` end to end: a real tritonserver, the link emulator and the step loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimprouter.cli import main


@pytest.mark.triton
def test_demo_answers_with_the_split_shown(
    tiny_qwen3_dir: Path, tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "slm").symlink_to(tiny_qwen3_dir)
    (pair / "llm").symlink_to(tiny_llama_dir)
    trace = tmp_path / "trace.json"
    code = main(["demo", "What is 2+2?", "--pair", str(pair), "--tau", "0", "--rtt-ms", "20",
                 "--bandwidth-mbit", "0", "--json", str(trace)])
    out = capsys.readouterr().out
    assert code == 0
    assert "cloud ready: gRPC 127.0.0.1:" in out
    assert "[cloud H=" in out  # tau 0 sends every step to the cloud
    assert "answer:" in out and "bytes: up" in out
    assert '"steps"' in trace.read_text()


def test_demo_without_the_pair_says_how_to_build_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--pair", str(tmp_path)]) == 2
    assert "glimp toy build" in capsys.readouterr().err
