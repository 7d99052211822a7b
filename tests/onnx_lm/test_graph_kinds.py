"""One runtime loop over both graphs: optimum's export and the fast (GroupQueryAttention) graph.

Both folders come from the same tiny Qwen3 checkpoint, so every figure must agree between them:
the runtime's IO binding, cache growth, truncation and chunked prefill are the same code on both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.hf_export import ExportOptions, export_checkpoint
from glimp_common.errors import ModelContractError
from onnx_lm import CausalLM, SessionConfig
from onnx_lm.manifest import MANIFEST_FILE, Manifest

CPU = SessionConfig(providers="cpu")


@pytest.fixture(scope="module")
def optimum_dir(tiny_qwen3_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("optimum_graph") / "onnx"
    export_checkpoint(tiny_qwen3_checkpoint, out, ExportOptions(graph="optimum"))
    return out


@pytest.fixture(scope="module")
def both(optimum_dir: Path, tiny_qwen3_dir: Path) -> dict[str, CausalLM]:
    return {"optimum": CausalLM.load(optimum_dir, CPU), "fast": CausalLM.load(tiny_qwen3_dir, CPU)}


def test_the_manifests_name_their_graphs(both: dict[str, CausalLM]) -> None:
    assert {kind: lm.manifest.graph for kind, lm in both.items()} == {"optimum": "optimum", "fast": "fast"}


def _session_run(lm: CausalLM, ids: list[int]) -> list[np.ndarray]:
    """Logits after each piece: a 5-token prefill, a 4-token prefill on the cache, then decodes,
    then a truncation back to 6 tokens and a refeed (the edge loop's resync)."""
    cache = lm.new_cache()
    out = [lm.prefill(cache, ids[:5]), lm.prefill(cache, ids[5:9])]
    out += [lm.decode_one(cache, token) for token in ids[9:12]]
    cache.truncate(6)
    out.append(lm.prefill(cache, ids[6:12]))
    assert cache.length == 12
    return out


def test_both_graphs_give_the_same_logits_through_the_same_loop(both: dict[str, CausalLM]) -> None:
    ids = [int(t) for t in np.random.default_rng(5).integers(0, both["fast"].manifest.vocab_size, 12)]
    optimum, fast = _session_run(both["optimum"], ids), _session_run(both["fast"], ids)
    for step, (a, b) in enumerate(zip(optimum, fast, strict=True)):
        assert np.abs(a - b).max() < 1e-4, step
    assert np.abs(fast[0] - fast[1]).max() > 1e-2  # the pieces differ: the check compares something
    assert np.abs(fast[-1] - fast[-2]).max() < 1e-4  # truncate + refeed = the same 12 tokens as before


def test_the_fast_graph_cache_is_bound_as_ortvalues_of_the_manifest_layout(both: dict[str, CausalLM]) -> None:
    lm = both["fast"]
    cache = lm.new_cache()
    lm.prefill(cache, [1, 2, 3])
    kv = lm.manifest.kv
    assert cache.keys[0].shape() == [1, kv.num_kv_heads, 3, kv.head_dim]
    assert cache.nbytes == 3 * kv.bytes_per_token()


def test_a_manifest_that_names_the_wrong_graph_is_refused(optimum_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(optimum_dir, tmp_path / "mislabelled")
    data = json.loads((folder / MANIFEST_FILE).read_text())
    data["graph"] = "fast"
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    expected = "manifest says graph 'fast' but the ONNX graph takes position_ids"
    with pytest.raises(ModelContractError, match=expected):
        CausalLM.load(folder, CPU)


def test_a_manifest_from_before_the_fast_graph_reads_as_optimum(optimum_dir: Path) -> None:
    data = json.loads((optimum_dir / MANIFEST_FILE).read_text())
    del data["graph"]
    assert Manifest.from_dict(data).graph == "optimum"
    with pytest.raises(ModelContractError, match="manifest graph 'genai' is not one of"):
        Manifest.from_dict({**data, "graph": "genai"})
