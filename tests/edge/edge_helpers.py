"""Helpers of the edge tests: a CPU session config, models forced to one token, manifest edits.

A "forced" model is a real exported tiny model whose ONNX graph gets one more node: a constant
added to the logits that makes one token all but certain. It runs under ONNX Runtime like any
other model and lets a test reach each way thinking ends (think_end, EOS, a repeat, the budget,
a full context) deterministically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from onnx_lm import SessionConfig

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
