"""Variants of the ONNX Runtime decode loop (`--variants`): where the time of a decode step goes.

Each variant changes one thing against onnx_lm's loop on the same export: the session's spin-wait,
the KV cache's form (numpy arrays through plain `session.run`), or the graph (the one
onnxruntime-genai's builder writes, or the project's own fast graph, `glimp export --graph fast`,
which replaced the ORT transformers optimizer's fusions tried here before: that graph is now
production code in export.fast_graph).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode.common import Contender, GenerateFn, RunTiming, onnx_lm_generate

log = logging.getLogger(__name__)


def cpu_session(onnx_path: Path, threads: int, *, spinning: bool = True) -> Any:
    """A CPU session built like onnx_lm's (ORT_ENABLE_ALL), optionally without spin-waiting."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    if not spinning:
        # Idle pool threads sleep instead of spinning: cheaper when other processes share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


def causal_lm_with_session(folder: Path, session: Any) -> Any:
    """onnx_lm's CausalLM driving a session built here (to try session options without editing it)."""
    from onnx_lm.manifest import Manifest
    from onnx_lm.providers import candidates
    from onnx_lm.session import CausalLM

    return CausalLM(folder, Manifest.load(folder), session, candidates("cpu")[0])


def variant_contenders(
    folder: Path, prompt: list[int], new_tokens: int, threads: int, work_dir: Path,
    checkpoint: Path | None = None,
) -> list[Contender]:
    """Alternative loops and graphs over the same export; graph variants are built under `work_dir`
    (the fast graph from `checkpoint`, the export's Hugging Face folder, when given)."""
    from onnx_lm.manifest import Manifest

    manifest = Manifest.load(folder)
    onnx_path = folder / manifest.onnx_file
    quiet = causal_lm_with_session(folder, cpu_session(onnx_path, threads, spinning=False))
    numpy_session = cpu_session(onnx_path, threads)
    kv = (manifest.kv.num_layers, manifest.kv.num_kv_heads, manifest.kv.head_dim)
    contenders = [
        Contender(
            "onnx_lm, allow_spinning=0",
            lambda: onnx_lm_generate(quiet, prompt, new_tokens),
            "onnx_lm's loop; session.intra_op.allow_spinning=0",
        ),
        Contender(
            "numpy-KV session.run loop",
            lambda: numpy_loop_generate(numpy_session, prompt, new_tokens, kv),
            "plain session.run, KV cache as numpy arrays in and out (the measured anchor's loop)",
        ),
    ]
    graphs = [
        _genai_graph_lm(folder, work_dir, threads),
        _fast_graph_lm(manifest, checkpoint, work_dir, threads),
    ]
    for lm, name, notes in graphs:
        if lm is not None:
            contenders.append(Contender(name, _generate_fn(lm, prompt, new_tokens), notes))
    return contenders


def _generate_fn(lm: Any, prompt: list[int], new_tokens: int) -> GenerateFn:
    # A function per model: a lambda in the loop above would see only the last one.
    return lambda: onnx_lm_generate(lm, prompt, new_tokens)


def _genai_graph_lm(folder: Path, work_dir: Path, threads: int) -> tuple[Any, str, str]:
    """onnx_lm on the graph genai's builder wrote (None until the genai model exists)."""
    name = "onnx_lm on genai builder's graph"
    notes = (
        "onnx_lm's loop (KV grows by concat) on the graph onnxruntime-genai's builder wrote: "
        "GroupQueryAttention with rotary inside, skip-RMSNorm; 160 nodes"
    )
    graph = work_dir / "genai" / "model.onnx"
    if not graph.is_file():
        return None, name, notes
    swapped = graph_swapped_folder(folder, graph, work_dir / "variants" / "genai-graph")
    return causal_lm_with_session(swapped, cpu_session(swapped / "model.onnx", threads)), name, notes


def _fast_graph_lm(
    manifest: Any, checkpoint: Path | None, work_dir: Path, threads: int
) -> tuple[Any, str, str]:
    """onnx_lm on export's fast graph of the same checkpoint (None when the export already is
    that graph, or its checkpoint is unknown)."""
    from export.hf_export import ExportOptions, export_checkpoint

    name = "onnx_lm on export's fast graph"
    notes = "glimp export --graph fast: GroupQueryAttention, rotary inside, fused RMSNorm (export.fast_graph)"
    if manifest.graph == "fast" or checkpoint is None or not (checkpoint / "config.json").is_file():
        return None, name, notes
    out = work_dir / "variants" / "fast-graph"
    if not (out / "manifest.json").is_file():
        export_checkpoint(checkpoint, out, ExportOptions(graph="fast", force=True))
    return causal_lm_with_session(out, cpu_session(out / manifest.onnx_file, threads)), name, notes


def numpy_loop_generate(
    session: Any, prompt: list[int], new_tokens: int, kv: tuple[int, int, int]
) -> tuple[list[int], RunTiming]:
    """A plain session.run loop with the KV cache as numpy arrays in and out."""
    past = _empty_past(*kv)
    has_positions = "position_ids" in {i.name for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    started = time.perf_counter()
    prefill_s: float | None = None
    tokens: list[int] = []
    ids, length = list(prompt), 0
    while len(tokens) < new_tokens:
        feeds = _feeds(ids, length, past, has_positions)
        outputs = dict(zip(output_names, session.run(None, feeds), strict=True))
        length += len(ids)
        past = {
            name.replace("present", "past_key_values"): value
            for name, value in outputs.items()
            if name.startswith("present")
        }
        tokens.append(int(np.argmax(outputs["logits"][0, -1])))
        ids = [tokens[-1]]
        prefill_s = prefill_s if prefill_s is not None else time.perf_counter() - started
    return tokens, RunTiming(time.perf_counter() - started, prefill_s)


def _empty_past(num_layers: int, kv_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    """past_key_values.{i}.key/value of zero length: [1, kv_heads, 0, head_dim]."""
    return {
        f"past_key_values.{i}.{kind}": np.zeros((1, kv_heads, 0, head_dim), np.float32)
        for i in range(num_layers)
        for kind in ("key", "value")
    }


def _feeds(ids: list[int], length: int, past: dict[str, np.ndarray], has_positions: bool) -> dict[str, Any]:
    """One step's inputs: `ids` after `length` cached positions."""
    feeds = {
        "input_ids": np.asarray([ids], np.int64),
        "attention_mask": np.ones((1, length + len(ids)), np.int64),
        **past,
    }
    if has_positions:
        feeds["position_ids"] = np.arange(length, length + len(ids), dtype=np.int64)[None, :]
    return feeds


def _copy_besides(folder: Path, out_dir: Path, graph_name: str) -> None:
    """Copy the export folder's files except the graph `graph_name` and its external data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(graph_name):
            shutil.copy2(path, out_dir / path.name)


def graph_swapped_folder(folder: Path, graph: Path, out_dir: Path) -> Path:
    """A copy of the export folder whose model.onnx (+ external data) is `graph`'s."""
    _copy_besides(folder, out_dir, "model.onnx")
    for path in graph.parent.glob(graph.name + "*"):  # model.onnx and model.onnx.data
        shutil.copy2(path, out_dir / path.name.replace(graph.name, "model.onnx"))
    return out_dir
