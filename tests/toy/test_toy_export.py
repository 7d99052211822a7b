"""A trained toy checkpoint through the export pipeline, then evaluated under torch and onnx_lm."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimp_common.errors import ModelContractError
from onnx_lm.manifest import Manifest
from toy.build import export_pair, ship_checkpoint
from toy.evaluate import evaluate
from toy.evaluate_onnx import onnx_solutions_and_scores
from toy.evaluate_torch import torch_solutions_and_scores
from toy.model import ModelSpec
from toy.task import problems, take
from toy.train import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<out>/{slm,llm}-hf checkpoints (a short run each) and their ONNX folders <out>/{slm,llm}."""
    base = tmp_path_factory.mktemp("toy_pair")
    spec = ModelSpec(hidden=32, layers=2, heads=2, ff=64)
    config = TrainConfig(steps=30, batch_size=16, lr=1e-2, warmup_steps=5)
    trained = train(spec, config, base / "work" / "slm", progress=False)
    for role in ("slm", "llm"):  # one training run serves both sides: this checks plumbing only
        ship_checkpoint(trained.out_dir, base / "out" / f"{role}-hf")
    export_pair(base / "out")
    return base / "out"


def test_manifest_describes_the_toy_task(exported_pair: Path) -> None:
    slm, llm = Manifest.load(exported_pair / "slm"), Manifest.load(exported_pair / "llm")
    assert (slm.role, llm.role) == ("slm", "llm")
    assert slm.step_delimiter == "\n"
    assert slm.think_end == "A:"
    assert slm.prompt_template == "Q:{question}\n"
    assert slm.eos_token_ids == (1,) and slm.pad_token_id == 2
    assert slm.vocab_size == 21 and slm.architecture == "llama"
    assert slm.tokenizer_fingerprint == llm.tokenizer_fingerprint
    assert slm.parity["model"]["passed"]


def test_the_tokenizer_loads_in_transformers(exported_pair: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(exported_pair / "slm-hf"))
    text = "Q:59-7*6+74\n52=59-7\nA:386"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text)
    assert tokenizer.eos_token == "<eos>" and tokenizer.pad_token == "<pad>"


def test_onnx_and_torch_score_alike(exported_pair: Path) -> None:
    sample = take(problems("dev", 0), 12)
    onnx_solutions, onnx_steps = onnx_solutions_and_scores(exported_pair / "slm", sample)
    torch_solutions, torch_steps = torch_solutions_and_scores(exported_pair / "slm-hf", sample)
    assert onnx_solutions == torch_solutions
    assert [s.correct for s in onnx_steps] == [s.correct for s in torch_steps]
    for a, b in zip(onnx_steps, torch_steps, strict=True):
        assert a.entropy_nats == pytest.approx(b.entropy_nats, abs=1e-4)


def test_evaluate_rejects_a_folder_that_is_no_model(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="neither an exported model folder"):
        evaluate(tmp_path, take(problems("dev", 0), 1))
