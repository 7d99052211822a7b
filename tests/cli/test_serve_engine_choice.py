"""`glimp serve DIR --engine auto|onnx|vllm`: which engine a folder gets, the one line a folder that
fits none gets, and `--build-only` for the vLLM engine (the repository and the GPU container's
command). Nothing is started: these run without the cloud venv's server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cloud_service.commands import VLLM_IMAGE, production_flags
from cloud_service.engine_choice import CLOUD_VENV_ENV, ONNX, VLLM, choose_engine
from glimprouter.cli import main
from protos.contract import MODEL_NAME

REPO = Path(__file__).resolve().parents[2]
TOY_LLM, TOY_LLM_HF = REPO / "models/toy-pair/llm", REPO / "models/toy-pair/llm-hf"


@pytest.fixture()
def cloud_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in cloud environment: what `choose_engine` checks (python3 and the install stamp)."""
    venv = tmp_path / "cloud-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (venv / ".installed-stamp").touch()
    monkeypatch.setenv(CLOUD_VENV_ENV, str(venv))
    return venv


def test_auto_picks_onnx_for_an_export_and_vllm_for_a_checkpoint(cloud_venv: Path) -> None:
    onnx, vllm = choose_engine(TOY_LLM), choose_engine(TOY_LLM_HF)
    assert (onnx.name, onnx.decoupled) == (ONNX, False)
    assert (vllm.name, vllm.decoupled, vllm.python_bin) == (VLLM, True, cloud_venv / "bin")


@pytest.mark.parametrize(("folder", "engine", "expected"), [
    (TOY_LLM_HF, "onnx", "has no manifest.json: export it first (glimp export DIR OUT) or serve it with "
                         "--engine vllm"),
    (TOY_LLM, "vllm", "is not one: it is an ONNX export, serve it with --engine onnx"),
    (REPO / "models/toy-pair/data", "auto", "is neither an exported ONNX folder"),
])
def test_a_folder_the_engine_cannot_serve_gets_one_line(
    folder: Path, engine: str, expected: str, cloud_venv: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", str(folder), "--engine", engine, "--insecure-no-token"]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


def test_vllm_without_the_cloud_environment_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(CLOUD_VENV_ENV, str(tmp_path / "absent"))
    assert main(["serve", str(TOY_LLM_HF), "--insecure-no-token"]) == 2
    assert "run `make cloud-venv`" in capsys.readouterr().err


def test_a_checkpoint_without_a_chat_template_needs_a_prompt_template(
    cloud_venv: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", str(TOY_LLM_HF), "--insecure-no-token"]) == 2
    assert "has no chat template" in capsys.readouterr().err


def test_build_only_for_vllm_writes_its_repository_and_the_vllm_containers_command(
    cloud_venv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    repository = tmp_path / "repo"
    code = main(["serve", str(TOY_LLM_HF), "--build-only", "--repository", str(repository),
                 "--prompt-template", "Q:{question}\\n", "--cache-budget-mb", "96", "--idle-ttl-s", "60"])
    out = capsys.readouterr().out
    assert code == 0, out
    model = repository / MODEL_NAME
    assert not (model / "llm").is_symlink() and (model / "llm" / "model.safetensors").is_file()
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert config.model_transaction_policy.decoupled
    assert parameters["KV_CACHE_BYTES"] == str(96 << 20)  # --cache-budget-mb is vLLM's KV space
    assert parameters["PROMPT_TEMPLATE"] == "Q:{question}\n" and float(parameters["IDLE_TTL_S"]) == 60.0
    assert VLLM_IMAGE in out and "pip install --no-cache-dir --no-deps /tmp/src" in out
    for flag in production_flags().args():
        assert flag in out, flag
