"""The decode benchmark's machinery on the tiny exported Qwen3: structure only, never timings.

A benchmark is a script, not a timed test: these tests run every contender for a few tokens and
check what the report holds (names, token counts, greedy agreement, overhead rows, files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.decode import speed as decode_speed
from bench.decode.common import REPO_ROOT
from bench.decode.speed import BenchConfig, run_benchmark, write_report
from glimp_common.errors import BadInputError

GENAI_VENV = REPO_ROOT / ".venv-genai"


def _config(tmp_path: Path, model_dir: Path, **overrides: object) -> BenchConfig:
    settings: dict[str, object] = dict(
        work_dir=tmp_path / "work",
        out_dir=tmp_path / "out",
        prompt_tokens=8,
        new_tokens=4,
        threads=1,
        repeats=2,
        warmup=0,
        step_tokens=4,
        probe_iterations=2,
        model_dir=model_dir,
    )
    settings.update(overrides)
    return BenchConfig(**settings)  # type: ignore[arg-type]


def test_report_holds_every_contender_and_the_overhead(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_qwen3_dir, with_variants=True)
    report = run_benchmark(config)

    names = [c.name for c in report.contenders]
    assert names[:2] == ["onnx_lm", "optimum"]
    assert "numpy-KV session.run loop" in names
    for contender in report.contenders:
        assert len(contender.tokens) == 4
        assert len(contender.runs) == 2
        assert contender.tokens_per_s > 0
    # Every loop drives the same fp32 graph greedily: the tokens must agree with onnx_lm's.
    assert report.same_greedy_tokens == {name: True for name in names[1:]}
    vocab = report.model["vocab_size"]
    assert {(o.vocab_size, o.sampling) for o in report.overhead} == {
        (v, label) for v in (vocab, decode_speed.QWEN3_VOCAB) for label in decode_speed.PROBE_MODES.values()
    }
    assert all(o.fraction > 0 for o in report.overhead)


def test_written_report_is_markdown_and_json(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_qwen3_dir, with_optimum=False, repeats=1)
    md_path, json_path = write_report(run_benchmark(config), tmp_path / "out")

    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert [c["name"] for c in data["contenders"]] == ["onnx_lm"]
    assert data["contenders"][0]["ratio_to_genai"] is None  # no genai in this run
    assert data["config"]["new_tokens"] == 4
    assert data["machine"]["command"].startswith("python")
    text = md_path.read_text(encoding="utf-8")
    assert "| onnx_lm |" in text
    assert "Routing overhead" in text


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="repeats must be >= 1"):
        BenchConfig(work_dir=tmp_path, out_dir=None, repeats=0)


@pytest.mark.slow
@pytest.mark.skipif(
    not (GENAI_VENV / "bin" / "python").is_file(),
    reason="no .venv-genai: run bash bench/decode/setup_genai_venv.sh",
)
def test_genai_contender_runs_in_its_own_venv(
    tiny_qwen3_checkpoint: Path, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        tiny_qwen3_dir,
        with_optimum=False,
        genai_venv=GENAI_VENV,
        checkpoint_dir=tiny_qwen3_checkpoint,
    )
    report = run_benchmark(config)

    genai = report.baseline()
    assert genai is not None and len(genai.tokens) == 4
    assert "onnxruntime-genai" in genai.notes
    assert report.to_dict()["contenders"][1]["ratio_to_genai"] == pytest.approx(1.0)


@pytest.mark.gpu
def test_gpu_checks_pass_on_the_tiny_model(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    from bench.decode.gpu_check import GpuCheckConfig, run_checks

    report = run_checks(
        GpuCheckConfig(
            work_dir=tmp_path,
            out_dir=None,
            model_dir=tiny_qwen3_dir,
            new_tokens=8,
            repeats=1,
            with_fp16=False,
        )
    )
    failed = [(c.name, c.figures) for c in report.checks if not c.passed]
    assert not failed


def test_a_relative_genai_venv_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    decode_speed.configure_parser(parser)
    config = decode_speed.config_from_args(parser.parse_args(["--genai-venv", "venv"]))
    # The genai worker runs from another working directory: a relative path would not be found.
    assert config.genai_venv == tmp_path / "venv"


def test_the_load_meter_counts_a_running_child_as_this_run_not_as_other_load() -> None:
    import subprocess
    import sys

    from bench.decode.common import _own_cpu_s

    before = _own_cpu_s()
    busy = ("import time\nend = time.process_time() + 1.0\n"
            "while time.process_time() < end: pass\nprint('done')")
    child = subprocess.Popen([sys.executable, "-c", busy], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"  # spun, not yet waited for
        assert _own_cpu_s() - before >= 0.9
    finally:
        child.wait()
