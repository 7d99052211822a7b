"""Edits of exported tiny model folders that the tests of several roles share (copies, never in place).

- `force_token`: one more ONNX node adds a constant to the logits so that one token is all but
  certain: a real model under ONNX Runtime that writes that token forever (no EOS, no delimiter).
- `reorder_vocabulary`: the same weights behind another tokenizer (the characters' ids reversed),
  so the two sides of a pair tokenize the same text differently, as a Qwen3 SLM and a Llama LLM do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

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


def reorder_vocabulary(src: Path, dst: Path) -> Path:
    """Copy `src` to `dst` with the ids of its single characters reversed (special tokens kept)."""
    from onnx_lm.text_codec import fingerprint_file

    shutil.copytree(src, dst)
    path = dst / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    chars = sorted((token for token in vocab if len(token) == 1), key=vocab.__getitem__)
    ids = sorted(vocab[token] for token in chars)
    vocab.update(zip(chars, reversed(ids), strict=True))
    path.write_text(json.dumps(data, ensure_ascii=False))
    set_manifest(dst, tokenizer_fingerprint=fingerprint_file(path))
    return dst


def set_manifest(folder: Path, **fields: object) -> Path:
    """Overwrite fields of a copied folder's manifest.json."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
    return folder
