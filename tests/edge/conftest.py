"""Fixtures of the edge tests: the tiny SLM/LLM pair, loaded once, and models forced to one token.

A "forced" model is a real exported tiny model whose ONNX graph gets one more node: a constant
added to the logits that makes one token all but certain. It runs under ONNX Runtime like any
other model and lets a test reach each way thinking ends (think_end, EOS, a repeat, the budget,
a full context) deterministically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_client import InProcessLLM
from onnx_lm import CausalLM, SessionConfig

CPU = SessionConfig(providers="cpu", intra_op_threads=1)
FORCE_LOGIT = 60.0  # added to one token's logit: every other token gets p < e^-60 / T


def force_token(src: Path, dst: Path, token: str) -> Path:
    """Copy the model folder `src` to `dst` with `token` forced at every position."""
    import onnx
    from onnx import helper, numpy_helper
    from tokenizers import Tokenizer

    shutil.copytree(src, dst)
    ids = Tokenizer.from_file(str(dst / "tokenizer.json")).encode(token, add_special_tokens=False).ids
    assert len(ids) == 1, f"{token!r} is not one token"
    model = onnx.load(str(dst / "model.onnx"))
    vocab = json.loads((dst / "manifest.json").read_text())["vocab_size"]
    bias = np.zeros(vocab, dtype=np.float32)
    bias[ids[0]] = FORCE_LOGIT
    for node in model.graph.node:
        node.output[:] = ["logits_unforced" if name == "logits" else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(bias, "logits_force_bias"))
    model.graph.node.append(helper.make_node("Add", ["logits_unforced", "logits_force_bias"], ["logits"]))
    onnx.save(model, str(dst / "model.onnx"))
    return dst


def set_manifest(folder: Path, **fields: object) -> Path:
    """Overwrite fields of a copied folder's manifest.json."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="session")
def slm_dir(tiny_qwen3_dir: Path) -> Path:
    return tiny_qwen3_dir


@pytest.fixture(scope="session")
def llm_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


@pytest.fixture(scope="session")
def slm(slm_dir: Path) -> CausalLM:
    return CausalLM.load(slm_dir, CPU)


@pytest.fixture(scope="session")
def llm(llm_dir: Path) -> InProcessLLM:
    return InProcessLLM.load(llm_dir, CPU)


@pytest.fixture(scope="session")
def forced(tmp_path_factory: pytest.TempPathFactory, slm_dir: Path, llm_dir: Path) -> Callable[[str, str], Path]:
    """forced(side, token) -> a folder of the SLM ("slm") or LLM ("llm") forced to `token`, cached."""
    made: dict[tuple[str, str], Path] = {}

    def make(side: str, token: str) -> Path:
        if (side, token) not in made:
            base = tmp_path_factory.mktemp(f"forced_{side}")
            made[side, token] = force_token(slm_dir if side == "slm" else llm_dir, base / "model", token)
        return made[side, token]

    return make
