"""Bad input gets a one-line error that says what is wrong and what to do; nothing is overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export import parity
from export.hf_export import ExportOptions, export_checkpoint
from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm import CausalLM


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(BadInputError) as exc:
        export_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    assert "does not exist" in _one_line(exc)
    assert not (tmp_path / "out").exists()


def test_folder_without_config_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(BadInputError) as exc:
        export_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    assert "no config.json" in _one_line(exc)


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(BadInputError) as exc:
        export_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    message = _one_line(exc)
    assert "'gpt2'" in message and "qwen2, qwen3, llama" in message


def test_existing_out_dir_is_kept_without_force(tiny_llama_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(BadInputError) as exc:
        export_checkpoint(tiny_llama_checkpoint, out)
    assert "--force" in _one_line(exc)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_force_replaces_the_out_dir(tiny_llama_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("old export")
    export_checkpoint(tiny_llama_checkpoint, out, ExportOptions(force=True, check_parity=False))
    assert not (out / "mine.txt").exists() and (out / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dtype": "float16", "quantize_int8": True}, "without --fp16"),
        ({"dtype": "bfloat16"}, "not supported"),
        ({"prompt_template": "Q: {q}"}, "{question}"),
        ({"role": "teacher"}, "slm"),
        ({"step_delimiter": ""}, "must not be empty"),
    ],
)
def test_bad_options(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(BadInputError, match=words.replace("{", r"\{").replace("}", r"\}")):
        ExportOptions(**kwargs)  # type: ignore[arg-type]


def _truncated_copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    model = dest / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    return dest


def test_truncated_onnx_is_reported_by_parity(
    tiny_qwen3_dir: Path, tiny_qwen3_checkpoint: Path, tmp_path: Path
) -> None:
    broken = _truncated_copy(tiny_qwen3_dir, tmp_path / "broken")
    with pytest.raises(ModelContractError) as exc:
        parity.check_parity(tiny_qwen3_checkpoint, broken / "model.onnx")
    message = _one_line(exc)
    assert "not a loadable ONNX model" in message and "glimp export --force" in message


def test_truncated_onnx_is_reported_by_the_runtime(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    broken = _truncated_copy(tiny_qwen3_dir, tmp_path / "broken")
    with pytest.raises(ModelContractError) as exc:
        CausalLM.load(broken)
    assert "model.onnx" in _one_line(exc)


def test_wrong_onnx_fails_parity_with_figures(tiny_llama_checkpoint: Path, tiny_qwen3_dir: Path) -> None:
    # Same vocabulary and shapes, different architecture and weights: only the figures tell.
    result = parity.check_parity(tiny_llama_checkpoint, tiny_qwen3_dir / "model.onnx")
    assert not result.passed and result.max_abs_logit_diff > result.tolerance  # type: ignore[operator]
    with pytest.raises(ModelContractError, match="parity check failed.*max \\|logit diff\\|"):
        parity.require_parity(result, tiny_qwen3_dir / "model.onnx")


def test_parity_failure_leaves_nothing_behind(
    tiny_llama_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A policy no real export meets (exact logits) makes the real check fail after the export.
    monkeypatch.setitem(parity.POLICIES, "float32", parity.ParityPolicy(abs_tolerance=0.0))
    with pytest.raises(ModelContractError, match="parity check failed"):
        export_checkpoint(tiny_llama_checkpoint, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
