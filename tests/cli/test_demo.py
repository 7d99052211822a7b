"""`glimp demo` end to end: a real tritonserver, the link emulator and the step loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_client import EdgeRouter, EntropyThreshold, InProcessLLM, RouterConfig, StepSettings
from edge_client.console import format_bytes
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
    data = json.loads(trace.read_text())
    # The answer: the same pair and settings in process (greedy) write the same steps and answer.
    reference = EdgeRouter.from_folders(
        tiny_qwen3_dir, InProcessLLM.load(tiny_llama_dir),
        RouterConfig(EntropyThreshold(0.0), StepSettings(temperature=0.0, seed=0)),
    ).answer("What is 2+2?")
    assert data["answer"] == reference.answer and data["transcript"] == reference.transcript
    assert f"answer: {reference.answer.strip()}\n" in out
    # The split: tau 0 sends every step to the cloud, and the summary shows the trace's counts.
    writers = [step["writer"] for step in data["steps"]]
    assert writers == ["cloud"] * len(reference.steps)
    assert out.count("[cloud H=") == len(writers)
    totals = data["totals"]
    assert f"steps: {len(writers)} (edge 0, cloud {len(writers)}, degraded 0; 100% to the cloud)" in out
    # The bytes: one call per step and one for the answer, each carrying bytes both ways.
    traffic = totals["traffic"]
    assert traffic["calls"] == len(writers) + 1 and traffic["resync_bytes_up"] == 0
    assert traffic["bytes_up"] == sum(s["traffic"]["bytes_up"] for s in data["steps"]) + (
        data["answer_record"]["traffic"]["bytes_up"])
    assert all(s["traffic"]["bytes_up"] > 0 and s["traffic"]["bytes_down"] > 0 for s in data["steps"])
    assert (f"bytes: up {format_bytes(traffic['bytes_up'])}, down {format_bytes(traffic['bytes_down'])} "
            f"in {traffic['calls']} calls") in out


def test_demo_without_the_pair_says_how_to_build_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--pair", str(tmp_path)]) == 2
    assert "glimp toy build" in capsys.readouterr().err
