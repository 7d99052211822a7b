"""`glimp export` through the console entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimprouter.cli import main
from onnx_lm.manifest import Manifest


def test_export_prints_time_figures_and_folder(
    tiny_qwen3_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "int4"
    assert main(["export", str(tiny_qwen3_checkpoint), str(out), "--int4"]) == 0
    printed = capsys.readouterr().out
    assert "exported qwen3 (int4-block32, fast graph) in" in printed
    assert "parity (float32 export, CPUExecutionProvider): max |logit diff|" in printed
    assert "parity (int4-block32, CPUExecutionProvider)" in printed and "not enforced" in printed
    assert f"wrote {out}" in printed


def test_flags_have_env_twins(
    tiny_llama_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GLIMP_EXPORT_ROLE", "slm")
    monkeypatch.setenv("GLIMP_EXPORT_NO_PARITY", "1")
    monkeypatch.setenv("GLIMP_EXPORT_STEP_DELIMITER", "\\n")
    out = tmp_path / "slm"
    args = ["export", str(tiny_llama_checkpoint), str(out), "--think-end", "<|im_end|>"]
    assert main([*args, "--prompt-template", "Q: {question}\\nA:"]) == 0
    manifest = Manifest.load(out)
    assert (manifest.role, manifest.step_delimiter, manifest.think_end) == ("slm", "\n", "<|im_end|>")
    assert manifest.prompt_template == "Q: {question}\nA:" and manifest.chat_template is None
    assert manifest.parity == {"model": "not checked: parity check disabled (--no-parity)"}


@pytest.mark.parametrize("case", ["missing", "exists", "unsupported"])
def test_bad_input_is_one_line_and_exit_2(
    case: str, tiny_qwen3_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out = tmp_path / "nowhere", tmp_path / "out"
    if case == "exists":
        checkpoint, out = tiny_qwen3_dir, tiny_qwen3_dir  # never overwritten without --force
    if case == "unsupported":
        checkpoint = tmp_path / "ckpt"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text('{"model_type": "mistral"}')
    assert main(["export", str(checkpoint), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("glimp export: error: ") and "\n" not in err
