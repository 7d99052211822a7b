"""The trained pair shipped in models/toy-pair: intact, loadable, and meeting its acceptance figures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from onnx_lm.manifest import Manifest
from toy.evaluate import evaluate
from toy.task import problems, read_jsonl, take

PAIR = Path(__file__).resolve().parents[2] / "models" / "toy-pair"


def test_checksums_match() -> None:
    lines = (PAIR / "SHA256SUMS").read_text().splitlines()
    assert len(lines) >= 20
    for line in lines:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((PAIR / name).read_bytes()).hexdigest() == digest, name


def test_manifests_describe_one_pair() -> None:
    slm, llm = Manifest.load(PAIR / "slm"), Manifest.load(PAIR / "llm")
    assert (slm.role, llm.role) == ("slm", "llm")
    for manifest in (slm, llm):
        assert manifest.step_delimiter == "\n"
        assert manifest.think_end == "A:"
        assert manifest.prompt_template == "Q:{question}\n"
        assert manifest.parity["model"]["passed"]
    assert slm.tokenizer_fingerprint == llm.tokenizer_fingerprint


def test_checkpoints_load_in_transformers() -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    for role, hidden in (("slm", 48), ("llm", 128)):
        model = LlamaForCausalLM.from_pretrained(str(PAIR / f"{role}-hf"))
        assert model.config.hidden_size == hidden and model.config.tie_word_embeddings
        tokenizer = AutoTokenizer.from_pretrained(str(PAIR / f"{role}-hf"))
        assert tokenizer.decode(tokenizer.encode("Q:59-7*6\n")) == "Q:59-7*6\n"


def test_the_test_set_is_the_seeded_held_out_stream() -> None:
    shipped = read_jsonl(PAIR / "data" / "test.jsonl")
    assert len(shipped) == 400
    assert shipped == take(problems("test", 0), 400)


@pytest.mark.slow
def test_acceptance_figures_on_the_400_test_problems() -> None:
    """LLM >= 85 %, SLM in 40-80 %, gap >= 10 points, SLM entropy AUROC >= 0.75 (greedy, ONNX)."""
    test = read_jsonl(PAIR / "data" / "test.jsonl")
    slm, llm = evaluate(PAIR / "slm", test), evaluate(PAIR / "llm", test)
    assert llm.accuracy >= 0.85
    assert 0.40 <= slm.accuracy <= 0.80
    assert llm.accuracy - slm.accuracy >= 0.10
    assert slm.entropy_auroc is not None and slm.entropy_auroc >= 0.75
    recorded = json.loads((PAIR / "figures.json").read_text())
    assert slm.accuracy == pytest.approx(recorded["slm"]["accuracy"], abs=0.005)
    assert llm.accuracy == pytest.approx(recorded["llm"]["accuracy"], abs=0.005)
    assert slm.entropy_auroc == pytest.approx(recorded["slm"]["entropy_auroc"], abs=0.005)
