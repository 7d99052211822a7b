"""Decode speed at batch 1, side by side in one run: onnx_lm vs optimum vs onnxruntime-genai.

    python -m bench.decode_speed            # builds the ~27M random Qwen3 once under .cache/bench

One random Qwen3-architecture checkpoint (hidden 512, 8 layers, vocab 4096, char tokenizer padded
to 4096 ids) is exported by the project (`export.hf_export.export_checkpoint`, fp32) and converted
by onnxruntime-genai's own model builder. Each contender decodes the same 32-token prompt into
128 greedy tokens with 2 intra-op threads, warm-up first, median of 5:

- onnx_lm: `CausalLM.prefill` + `decode_one` (IO binding, KV cache as OrtValues);
- optimum: `ORTModelForCausalLM.generate` on the same ONNX file (min_new_tokens = max_new_tokens);
- genai: onnxruntime-genai in its own virtual environment (`bench/setup_genai_venv.sh`), run as a
  subprocess of this module (`--worker genai`), which prints its timings as JSON.

It also measures the router's per-step overhead (entropy + sampling of the probe token's logits)
as a fraction of a whole step, and variants of the ONNX Runtime loop that show where time goes
(`--variants`). Results go to bench/results/decode_speed.{md,json}.

This module is also run by the genai venv's Python, which lacks the project's packages: keep
top-level imports to the standard library and numpy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT_TEXT = "Q: 48*7+19=? Think step by step.\n"  # 32 characters = 32 tokens (char tokenizer)
QWEN3_VOCAB = 151_936  # a real Qwen3 vocabulary: entropy cost grows with it


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def bad_input(message: str) -> Exception:
    """The project's BadInputError, imported late: the genai worker's venv cannot import onnx_lm."""
    from onnx_lm.errors import BadInputError

    return BadInputError(message)


def bench_error(message: str) -> Exception:
    """A GlimpError for a contender that failed to build or run."""
    from onnx_lm.errors import GlimpError

    return GlimpError(message)


@dataclass(frozen=True)
class BenchShape:
    """The benchmark checkpoint: a random Qwen3 of about 27M parameters (the measured anchor)."""

    hidden_size: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4  # grouped-query attention, as in real Qwen3
    intermediate_size: int = 1536
    vocab_size: int = 4096  # the char tokenizer's ~100 ids, padded: logits have this many rows
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    # Wider than HF's 0.02 so logits are peaked: greedy tokens then survive fp16 / CPU-vs-GPU noise.
    initializer_range: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise bad_input(
                f"hidden_size {self.hidden_size} must divide by num_heads {self.num_heads} "
                f"and num_heads by num_kv_heads {self.num_kv_heads}"
            )


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    work_dir: Path  # checkpoint, ONNX export and genai model are built here once and reused
    out_dir: Path | None  # where decode_speed.{md,json} go; None: not written
    prompt_tokens: int = 32
    new_tokens: int = 128
    threads: int = 2  # intra-op threads of every contender
    repeats: int = 5  # timed runs per contender; the median is reported
    warmup: int = 1  # untimed runs first (allocator, thread pool, caches)
    genai_venv: Path | None = None  # None: onnxruntime-genai is left out
    with_optimum: bool = True
    with_variants: bool = False  # also time alternative loops (why onnx_lm is as fast as it is)
    step_tokens: int = 32  # tokens of a reasoning step, for the routing-overhead fraction
    model_dir: Path | None = None  # an existing export to use instead of building the 27M model
    checkpoint_dir: Path | None = None  # its checkpoint, for genai's builder; None: work_dir/checkpoint
    probe_iterations: int = 200  # timed calls of entropy + sampling per vocabulary size
    wait_idle_s: float = 0.0  # wait up to this long for other processes to leave the CPUs alone

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "new_tokens", "threads", "repeats", "step_tokens", "probe_iterations"):
            if getattr(self, name) < 1:
                raise bad_input(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise bad_input(f"warmup must be >= 0, got {self.warmup}")

    @property
    def checkpoint(self) -> Path:
        """The Hugging Face checkpoint genai's builder converts."""
        return self.checkpoint_dir or self.work_dir / "checkpoint"


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTiming:
    """One timed generation: prompt -> `new_tokens` greedy tokens."""

    total_s: float  # prefill + every decode step + sampling
    prefill_s: float | None  # None where the contender does not expose it (optimum generate)


@dataclass
class ContenderResult:
    """Every timed run of one contender plus the tokens it produced."""

    name: str
    runs: list[RunTiming]
    tokens: list[int]
    new_tokens: int
    notes: str = ""

    @property
    def tokens_per_s(self) -> float:
        """new tokens / median total time: the headline figure (prefill included)."""
        return self.new_tokens / statistics.median(r.total_s for r in self.runs)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """(new tokens - 1) / median time after prefill: decode steps alone."""
        if any(r.prefill_s is None for r in self.runs) or self.new_tokens < 2:
            return None
        return (self.new_tokens - 1) / statistics.median(r.total_s - (r.prefill_s or 0.0) for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tokens_per_s": self.tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "notes": self.notes,
            "runs": [asdict(r) for r in self.runs],
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class ProbeOverhead:
    """Router cost per step: entropy + sampling of the probe logits, against a whole step."""

    vocab_size: int
    sampling: str  # "greedy" or "T=0.6, top-p=0.95" (the paper's step settings)
    probe_s: float  # median of entropy_nats + sample_token on one row of logits
    step_s: float  # step_tokens x the onnx_lm per-token decode time measured in this run
    step_tokens: int

    @property
    def fraction(self) -> float:
        return self.probe_s / self.step_s


@dataclass
class BenchReport:
    """Everything one run measured."""

    config: dict[str, Any]
    machine: dict[str, Any]
    model: dict[str, Any]
    contenders: list[ContenderResult]
    overhead: list[ProbeOverhead] = field(default_factory=list)
    same_greedy_tokens: dict[str, bool] = field(default_factory=dict)

    def baseline(self) -> ContenderResult | None:
        return next((c for c in self.contenders if c.name == "onnxruntime-genai"), None)

    def to_dict(self) -> dict[str, Any]:
        base = self.baseline()
        return {
            "config": self.config,
            "machine": self.machine,
            "model": self.model,
            "contenders": [
                {**c.to_dict(), "ratio_to_genai": c.tokens_per_s / base.tokens_per_s if base else None}
                for c in self.contenders
            ],
            "same_greedy_tokens": self.same_greedy_tokens,
            "routing_overhead": [{**asdict(o), "fraction": o.fraction} for o in self.overhead],
        }


# ---------------------------------------------------------------------------------------------
# The benchmark model
# ---------------------------------------------------------------------------------------------


def make_checkpoint(out_dir: Path, shape: BenchShape = BenchShape(), *, seed: int = 0) -> Path:
    """Write a random Qwen3 checkpoint of `shape` with the project's char tokenizer to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    from export.char_tokenizer import build_char_tokenizer, save_hf_tokenizer
    from export.tiny import ALPHABET, CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

    tokenizer = build_char_tokenizer(
        ALPHABET, special_tokens=SPECIAL_TOKENS, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )
    if tokenizer.get_vocab_size() > shape.vocab_size:
        raise bad_input(
            f"vocab_size {shape.vocab_size} is below the tokenizer's {tokenizer.get_vocab_size()}"
        )
    eos_id, pad_id = tokenizer.token_to_id(EOS_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
    config = Qwen3Config(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        head_dim=shape.hidden_size // shape.num_heads,
        max_position_embeddings=shape.max_position_embeddings,
        initializer_range=shape.initializer_range,
        tie_word_embeddings=shape.tie_word_embeddings,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(str(out_dir))
    save_hf_tokenizer(
        tokenizer, out_dir, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, chat_template=CHAT_TEMPLATE
    )
    log.info("wrote %s (%.1fM parameters)", out_dir, model.num_parameters() / 1e6)
    return out_dir


def ensure_export(work_dir: Path, shape: BenchShape = BenchShape(), *, dtype: str = "float32") -> Path:
    """The project's export of the benchmark checkpoint (built on first use, then reused)."""
    from export.hf_export import ExportOptions, export_checkpoint

    checkpoint = work_dir / "checkpoint"
    if not (checkpoint / "config.json").is_file():
        make_checkpoint(checkpoint, shape)
    onnx_dir = work_dir / ("onnx" if dtype == "float32" else f"onnx-{dtype}")
    if not (onnx_dir / "manifest.json").is_file():
        started = time.perf_counter()
        export_checkpoint(checkpoint, onnx_dir, ExportOptions(dtype=dtype))
        log.info("exported %s in %.1f s", onnx_dir, time.perf_counter() - started)
    return onnx_dir


def ensure_genai_model(checkpoint: Path, out_dir: Path, venv: Path) -> Path:
    """onnxruntime-genai's builder run on `checkpoint` (fp32, CPU), in the genai venv, once."""
    if (out_dir / "genai_config.json").is_file():
        return out_dir
    command = [
        str(venv / "bin" / "python"),
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(checkpoint),
        "-o",
        str(out_dir),
        "-p",
        "fp32",
        "-e",
        "cpu",
        "-c",
        str(out_dir.parent / "genai_cache"),
    ]
    log.info("building the genai model: %s", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        raise bench_error(
            f"onnxruntime-genai's builder failed ({done.returncode}); its log ends:\n{done.stderr[-3000:]}"
        )
    return out_dir


def prompt_ids(folder: Path, count: int) -> list[int]:
    """`count` token ids of PROMPT_TEXT (repeated as needed) under the folder's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = PROMPT_TEXT * (count // len(PROMPT_TEXT) + 1)
    ids = tokenizer.encode(text, add_special_tokens=False).ids[:count]
    if len(ids) != count:
        raise bad_input(f"the prompt gave {len(ids)} tokens under {folder}'s tokenizer, {count} wanted")
    return list(ids)


# ---------------------------------------------------------------------------------------------
# Timing protocol: every contender warms up, then the timed runs are interleaved (A B C, A B C,
# ...) so that load from other processes on a shared machine falls on all of them alike.
# ---------------------------------------------------------------------------------------------

GenerateFn = Callable[[], tuple[list[int], RunTiming]]


@dataclass(frozen=True)
class Contender:
    """A named way to turn the prompt into `new_tokens` greedy tokens, timed by the caller."""

    name: str
    generate: GenerateFn
    notes: str = ""


def time_interleaved(contenders: Sequence[Contender], config: BenchConfig) -> list[ContenderResult]:
    """Warm every contender up, then run them round-robin `config.repeats` times."""
    for contender in contenders:
        for _ in range(config.warmup):
            contender.generate()
    runs: dict[str, list[RunTiming]] = {c.name: [] for c in contenders}
    tokens: dict[str, list[int]] = {}
    for _ in range(config.repeats):
        for contender in contenders:
            tokens[contender.name], timing = contender.generate()
            runs[contender.name].append(timing)
    results = []
    for contender in contenders:
        if len(tokens[contender.name]) != config.new_tokens:
            raise bench_error(
                f"{contender.name} produced {len(tokens[contender.name])} tokens, {config.new_tokens} wanted"
            )
        result = ContenderResult(
            contender.name, runs[contender.name], tokens[contender.name], config.new_tokens, contender.notes
        )
        log.info("%s: %.1f tok/s", contender.name, result.tokens_per_s)
        results.append(result)
    return results


def onnx_lm_generate(lm: Any, prompt: list[int], new_tokens: int) -> tuple[list[int], RunTiming]:
    """The project's loop: prefill, then one `decode_one` per token, greedy sampling."""
    from onnx_lm.sampling import GREEDY, sample_token

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    cache = lm.new_cache()
    logits = lm.prefill(cache, prompt)
    prefill_s = time.perf_counter() - started
    tokens = [sample_token(logits, GREEDY, rng)]
    while len(tokens) < new_tokens:
        logits = lm.decode_one(cache, tokens[-1])
        tokens.append(sample_token(logits, GREEDY, rng))
    return tokens, RunTiming(time.perf_counter() - started, prefill_s)


def onnx_lm_contender(folder: Path, prompt: list[int], config: BenchConfig) -> Contender:
    from onnx_lm.session import CausalLM, SessionConfig

    lm = CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=config.threads))
    return Contender(
        "onnx_lm",
        lambda: onnx_lm_generate(lm, prompt, config.new_tokens),
        "CausalLM.prefill + decode_one, IO binding, KV cache as OrtValues",
    )


def optimum_contender(folder: Path, prompt: list[int], config: BenchConfig) -> Contender:
    """optimum's ORTModelForCausalLM.generate on the very same model.onnx."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    model = ORTModelForCausalLM.from_pretrained(
        str(folder),
        provider="CPUExecutionProvider",
        session_options=options,
        use_cache=True,
        local_files_only=True,
    )
    input_ids = torch.tensor([prompt], dtype=torch.int64)

    @torch.inference_mode()
    def generate() -> tuple[list[int], RunTiming]:
        started = time.perf_counter()
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=config.new_tokens,
            min_new_tokens=config.new_tokens,
            pad_token_id=model.config.pad_token_id,
        )
        return out[0, len(prompt) :].tolist(), RunTiming(time.perf_counter() - started, None)

    return Contender("optimum", generate, "ORTModelForCausalLM.generate, greedy, same model.onnx")


class GenaiWorker:
    """This module's genai worker, alive in the genai venv; one JSON line per generation."""

    def __init__(self, venv: Path, genai_dir: Path, prompt: list[int], config: BenchConfig) -> None:
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "bench.decode_speed",
            "--worker",
            "genai",
            "--genai-model",
            str(genai_dir),
            "--prompt-ids",
            ",".join(map(str, prompt)),
            "--new-tokens",
            str(config.new_tokens),
            "--threads",
            str(config.threads),
        ]
        self._process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.versions = self._read()

    def generate(self) -> tuple[list[int], RunTiming]:
        assert self._process.stdin is not None
        self._process.stdin.write("run\n")
        self._process.stdin.flush()
        payload = self._read()
        return payload["tokens"], RunTiming(payload["total_s"], payload["prefill_s"])

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise bench_error(f"the genai worker exited ({self._process.wait()}); see its stderr above")
        return dict(json.loads(line))

    def contender(self) -> Contender:
        return Contender(
            "onnxruntime-genai",
            self.generate,
            f"onnxruntime-genai {self.versions['genai_version']} (onnxruntime "
            f"{self.versions['ort_version']}), its builder's fp32 CPU model",
        )


# ---------------------------------------------------------------------------------------------
# The genai worker (runs inside .venv-genai: only stdlib, numpy and onnxruntime_genai)
# ---------------------------------------------------------------------------------------------


def genai_worker(model_dir: Path, prompt: list[int], new_tokens: int, threads: int) -> None:
    """Serve timed generations: print versions, then one JSON line per "run" line on stdin."""
    import onnxruntime as ort
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.clear_providers()  # CPU
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    print(json.dumps({"genai_version": og.__version__, "ort_version": ort.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        tokens, timing = _genai_generate(og, model, prompt, new_tokens)
        print(json.dumps({"tokens": tokens, **timing}), flush=True)


def _genai_generate(
    og: Any, model: Any, prompt: list[int], new_tokens: int
) -> tuple[list[int], dict[str, float]]:
    params = og.GeneratorParams(model)
    total = len(prompt) + new_tokens
    params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=1)
    started = time.perf_counter()
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([prompt], dtype=np.int32))  # runs the prefill
    prefill_s = time.perf_counter() - started
    tokens: list[int] = []
    while len(tokens) < new_tokens and not generator.is_done():
        generator.generate_next_token()  # after the first: decode the previous token, then pick
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, {"total_s": time.perf_counter() - started, "prefill_s": prefill_s}


# ---------------------------------------------------------------------------------------------
# Routing overhead: the probe's entropy + sampling against a whole step
# ---------------------------------------------------------------------------------------------


PROBE_MODES = {
    "greedy": "greedy",
    "sampled": "T=0.6, top-p=0.95",
    "sampled-partial": "T=0.6, top-p=0.95, partial sort (proposed)",
}


def nucleus_probs_partial(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """onnx_lm.sampling.nucleus_probs with a partial sort instead of a full one; identical output.

    The full stable argsort of a 151,936-token row dominates a sampled probe. Only the head of
    that order matters: every token at least as likely as the k-th likeliest (ties included), taken
    in index order and sorted stably, is exactly that head. k grows until the head holds top_p.
    """
    from onnx_lm.sampling import log_softmax

    probs = np.exp(log_softmax(logits, temperature))
    if top_p >= 1.0:
        return probs
    k = min(64, probs.size)
    while True:
        kth = np.partition(probs, probs.size - k)[probs.size - k]
        head = np.flatnonzero(probs >= kth)
        order = head[np.argsort(-probs[head], kind="stable")]
        cumulative = np.cumsum(probs[order])
        if cumulative[-1] >= top_p or k == probs.size:
            break
        k = min(k * 8, probs.size)
    keep = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    truncated = np.zeros_like(probs)
    kept = order[:keep]
    truncated[kept] = probs[kept]
    return np.asarray(truncated / truncated.sum())


def probe_seconds(vocab_size: int, mode: str, *, iterations: int = 200, seed: int = 0) -> float:
    """Median time of entropy + sampling (as `mode` says) on one random row of `vocab_size` logits."""
    from onnx_lm.sampling import GREEDY, SamplingParams, entropy_nats, sample_token

    params = GREEDY if mode == "greedy" else SamplingParams(temperature=0.6, top_p=0.95, seed=seed)
    rng = np.random.default_rng(seed)
    # Scale 3: a spread like a real LM's logits (a few dominant tokens, a long tail).
    logits = (rng.standard_normal(vocab_size) * 3.0).astype(np.float32)
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        entropy_nats(logits)
        if mode == "sampled-partial":
            probs = nucleus_probs_partial(logits, params.temperature, params.top_p)
            int(rng.choice(probs.shape[0], p=probs))  # as sample_token draws
        else:
            sample_token(logits, params, rng)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def routing_overhead(
    per_token_s: float, step_tokens: int, vocab_sizes: Sequence[int], iterations: int = 200
) -> list[ProbeOverhead]:
    """Probe cost for each vocabulary size: greedy, the paper's sampling, and the proposed sampler."""
    rows = []
    for vocab in vocab_sizes:
        for mode, label in PROBE_MODES.items():
            rows.append(
                ProbeOverhead(
                    vocab_size=vocab,
                    sampling=label,
                    probe_s=probe_seconds(vocab, mode, iterations=iterations),
                    step_s=per_token_s * step_tokens,
                    step_tokens=step_tokens,
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Variants: where the time of a decode step goes
# ---------------------------------------------------------------------------------------------


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


def variant_contenders(folder: Path, prompt: list[int], config: BenchConfig) -> list[Contender]:
    """Alternative loops and graphs over the same export: where a decode step's time goes."""
    from onnx_lm.manifest import Manifest

    manifest = Manifest.load(folder)
    onnx_path = folder / manifest.onnx_file
    n = config.new_tokens
    quiet = causal_lm_with_session(folder, cpu_session(onnx_path, config.threads, spinning=False))
    numpy_session = cpu_session(onnx_path, config.threads)
    kv = (manifest.kv.num_layers, manifest.kv.num_kv_heads, manifest.kv.head_dim)
    contenders = [
        Contender(
            "onnx_lm, allow_spinning=0",
            lambda: onnx_lm_generate(quiet, prompt, n),
            "onnx_lm's loop; session.intra_op.allow_spinning=0",
        ),
        Contender(
            "numpy-KV session.run loop",
            lambda: numpy_loop_generate(numpy_session, prompt, n, kv),
            "plain session.run, KV cache as numpy arrays in and out (the measured anchor's loop)",
        ),
    ]
    genai_graph = config.work_dir / "genai" / "model.onnx"
    if genai_graph.is_file():
        swapped = graph_swapped_folder(folder, genai_graph, config.work_dir / "variants" / "genai-graph")
        genai_lm = causal_lm_with_session(swapped, cpu_session(swapped / "model.onnx", config.threads))
        contenders.append(
            Contender(
                "onnx_lm on genai builder's graph",
                lambda: onnx_lm_generate(genai_lm, prompt, n),
                "onnx_lm's loop (KV grows by concat) on the graph onnxruntime-genai's builder wrote: "
                "GroupQueryAttention with rotary inside, skip-RMSNorm; 160 nodes",
            )
        )
    fused = fused_folder(folder, config.work_dir / "variants" / "fused", manifest)
    if fused is not None:
        fused_lm = causal_lm_with_session(fused, cpu_session(fused / manifest.onnx_file, config.threads))
        contenders.append(
            Contender(
                "onnx_lm on ORT-optimizer graph",
                lambda: onnx_lm_generate(fused_lm, prompt, n),
                "onnxruntime.transformers.optimizer model_type=qwen3 (RMSNorm, skip-RMSNorm, rotary fusions)",
            )
        )
    return contenders


def numpy_loop_generate(
    session: Any, prompt: list[int], new_tokens: int, kv: tuple[int, int, int]
) -> tuple[list[int], RunTiming]:
    """A plain session.run loop with the KV cache as numpy arrays in and out."""
    num_layers, kv_heads, head_dim = kv
    # past_key_values.{i}.key/value: [1, kv_heads, seq, head_dim]
    past = {
        f"past_key_values.{i}.{kind}": np.zeros((1, kv_heads, 0, head_dim), np.float32)
        for i in range(num_layers)
        for kind in ("key", "value")
    }
    has_positions = "position_ids" in {i.name for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]
    started = time.perf_counter()
    prefill_s: float | None = None
    tokens: list[int] = []
    ids, length = list(prompt), 0
    while len(tokens) < new_tokens:
        feeds = {
            "input_ids": np.asarray([ids], np.int64),
            "attention_mask": np.ones((1, length + len(ids)), np.int64),
            **past,
        }
        if has_positions:
            feeds["position_ids"] = np.arange(length, length + len(ids), dtype=np.int64)[None, :]
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


def graph_swapped_folder(folder: Path, graph: Path, out_dir: Path) -> Path:
    """A copy of the export folder whose model.onnx (+ external data) is `graph`'s."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            shutil.copy2(path, out_dir / path.name)
    for path in graph.parent.glob(graph.name + "*"):  # model.onnx and model.onnx.data
        shutil.copy2(path, out_dir / path.name.replace(graph.name, "model.onnx"))
    return out_dir


def fused_folder(folder: Path, out_dir: Path, manifest: Any) -> Path | None:
    """A copy of the export whose graph went through ORT's transformers optimizer (None: it failed)."""
    import shutil

    from onnxruntime.transformers.optimizer import optimize_model

    if (out_dir / manifest.onnx_file).is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(manifest.onnx_file):
            shutil.copy2(path, out_dir / path.name)
    try:
        # num_heads/hidden_size 0: the optimizer reads them from the graph.
        optimized = optimize_model(
            str(folder / manifest.onnx_file),
            model_type="qwen3",
            num_heads=0,
            hidden_size=0,
            opt_level=0,
            use_gpu=False,
        )
        log.info(
            "ORT optimizer fusions: %s",
            {k: v for k, v in optimized.get_fused_operator_statistics().items() if v},
        )
        optimized.save_model_to_file(str(out_dir / manifest.onnx_file))
    except Exception as exc:  # the optimizer's pattern matching is best-effort by design
        log.warning("onnxruntime transformers optimizer failed on %s: %s", folder, exc)
        return None
    return out_dir


# ---------------------------------------------------------------------------------------------
# Load from other processes (the machine is shared): measured, and optionally waited out
# ---------------------------------------------------------------------------------------------


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no /proc."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return None
    fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu_s() -> float:
    times = os.times()  # children count once waited for (the genai worker is, before the end)
    return times.user + times.system + times.children_user + times.children_system


class LoadMeter:
    """Share of all CPUs that *other* processes kept busy between creation and `others_share()`."""

    def __init__(self) -> None:
        self._start = _cpu_jiffies()
        self._own_start = _own_cpu_s()

    def others_share(self) -> float | None:
        end = _cpu_jiffies()
        if self._start is None or end is None or end[1] == self._start[1]:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self._start[0]) / hz
        total = (end[1] - self._start[1]) / hz
        return max(0.0, (busy - (_own_cpu_s() - self._own_start)) / total)


def wait_for_idle(timeout_s: float, *, busy_below: float = 0.15, window_s: float = 2.0) -> None:
    """Wait (up to `timeout_s`) for a `window_s` window in which the CPUs were mostly idle."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meter = LoadMeter()
        time.sleep(window_s)
        share = meter.others_share()
        if share is None or share < busy_below:
            return
        log.info("other processes keep %.0f%% of the CPUs busy; waiting", share * 100)
    if timeout_s > 0:
        log.warning("the CPUs did not go idle within %.0f s; timing under load", timeout_s)


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def run_benchmark(config: BenchConfig, shape: BenchShape = BenchShape()) -> BenchReport:
    """Build what is missing, time every contender on the same prompt, measure the overhead."""
    import torch

    torch.set_num_threads(config.threads)  # optimum's generate does its logits work in torch
    folder = config.model_dir or ensure_export(config.work_dir, shape)
    prompt = prompt_ids(folder, config.prompt_tokens)
    contenders = [onnx_lm_contender(folder, prompt, config)]
    if config.with_optimum:
        contenders.append(optimum_contender(folder, prompt, config))
    worker = None
    if config.genai_venv is not None:
        genai_dir = ensure_genai_model(config.checkpoint, config.work_dir / "genai", config.genai_venv)
        worker = GenaiWorker(config.genai_venv, genai_dir, prompt, config)
        contenders.append(worker.contender())
    if config.with_variants:
        contenders += variant_contenders(folder, prompt, config)
    wait_for_idle(config.wait_idle_s)
    load = LoadMeter()
    try:
        results = time_interleaved(contenders, config)
    finally:
        if worker is not None:
            worker.close()
    machine = {**machine_info(), "others_cpu_share_during_timing": load.others_share()}
    per_token_s = 1.0 / (results[0].decode_tokens_per_s or results[0].tokens_per_s)
    overhead = routing_overhead(
        per_token_s, config.step_tokens, _vocab_sizes(folder), config.probe_iterations
    )
    same = {r.name: r.tokens == results[0].tokens for r in results[1:]}
    return BenchReport(
        _config_dict(config), machine, _model_info(folder, prompt, config.checkpoint), results, overhead, same
    )


def _vocab_sizes(folder: Path) -> list[int]:
    from onnx_lm.manifest import Manifest

    return list(dict.fromkeys([Manifest.load(folder).vocab_size, QWEN3_VOCAB]))


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def _model_info(folder: Path, prompt: list[int], checkpoint: Path) -> dict[str, Any]:
    from onnx_lm.manifest import Manifest

    manifest = Manifest.load(folder)
    return {
        "folder": str(folder),
        "architecture": manifest.architecture,
        "dtype": manifest.dtype,
        "vocab_size": manifest.vocab_size,
        "num_layers": manifest.kv.num_layers,
        "parameters": _checkpoint_parameter_count(checkpoint),
        "onnx_weight_elements": _onnx_parameter_count(folder / manifest.onnx_file),
        "prompt_ids": prompt,
    }


def _checkpoint_parameter_count(checkpoint: Path) -> int | None:
    """Parameters of the checkpoint, from the safetensors header (no weights read)."""
    path = checkpoint / "model.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")


def _onnx_parameter_count(onnx_path: Path) -> int:
    """Elements of the graph's float weight matrices (a tied embedding may be stored twice)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    weights = [t for t in model.graph.initializer if t.data_type in floats and len(t.dims) > 1]
    return sum(int(np.prod(t.dims)) for t in weights)


def machine_info(module: str = "bench.decode_speed") -> dict[str, Any]:
    """What the figures were measured on, and the command that measured them."""
    import onnxruntime as ort

    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.executable).name, "-m", module, *sys.argv[1:]]),
    }


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def render_markdown(report: BenchReport) -> str:
    """The report as a Markdown page: tok/s table, ratios, token agreement, routing overhead."""
    data, base = report.to_dict(), report.baseline()
    cfg, machine, model = report.config, report.machine, report.model
    lines = [
        "# Decode speed at batch 1 (CPU)",
        "",
        f"- Date (UTC): {machine['date_utc']}; command: `{machine['command']}`",
        f"- Machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), {machine['platform']}, "
        f"Python {machine['python']}, onnxruntime {machine['onnxruntime']}",
        f"- CPU share other processes used while timing: "
        f"{_percent(machine.get('others_cpu_share_during_timing'))} (the machine is shared; "
        "timed runs are interleaved so that load falls on every contender alike)",
        f"- Model: random {model['architecture']}, {_millions(model['parameters'])} parameters "
        f"(the ONNX graph's weight matrices hold {_millions(model['onnx_weight_elements'])}), "
        f"{model['num_layers']} layers, vocab {model['vocab_size']}, {model['dtype']}",
        f"- Protocol: {cfg['prompt_tokens']}-token prompt, {cfg['new_tokens']} new greedy tokens, "
        f"{cfg['threads']} intra-op threads, {cfg['warmup']} warm-up run(s), median of {cfg['repeats']}",
        "- tok/s = new tokens / whole generation time (prefill included); decode tok/s = "
        "(new tokens - 1) / time after prefill",
        "",
        "| contender | tok/s | decode tok/s | x genai | same greedy tokens as onnx_lm | notes |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in data["contenders"]:
        decode = f"{row['decode_tokens_per_s']:.1f}" if row["decode_tokens_per_s"] else "-"
        ratio = f"{row['ratio_to_genai']:.3f}" if base else "-"
        same = "(reference)" if row["name"] == "onnx_lm" else str(report.same_greedy_tokens.get(row["name"]))
        lines.append(
            f"| {row['name']} | {row['tokens_per_s']:.1f} | {decode} | {ratio} | {same} | {row['notes']} |"
        )
    lines += [
        "",
        "## Routing overhead per step (probe logits: entropy_nats + sample_token)",
        "",
        "| vocab | sampling | probe (ms) | step of N tokens (ms) | fraction |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for o in report.overhead:
        lines.append(
            f"| {o.vocab_size} | {o.sampling} | {o.probe_s * 1e3:.3f} | "
            f"{o.step_s * 1e3:.1f} (N={o.step_tokens}) | {o.fraction:.2%} |"
        )
    lines += [
        "",
        "The step time is N x this model's measured onnx_lm decode time per token; for a "
        "real Qwen3-size model the step is far slower, so its fraction is smaller still.",
        "",
    ]
    return "\n".join(lines)


def _millions(count: int | None) -> str:
    return "?" if count is None else f"{count / 1e6:.1f}M"


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def write_report(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "decode_speed.md", out_dir / "decode_speed.json"
    md.write_text(render_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    return md, js


def format_table(report: BenchReport) -> str:
    base = report.baseline()
    rows = [f"{'contender':<42} {'tok/s':>8} {'decode':>8} {'x genai':>8}  same tokens"]
    for c in report.contenders:
        decode = f"{c.decode_tokens_per_s:8.1f}" if c.decode_tokens_per_s else f"{'-':>8}"
        ratio = f"{c.tokens_per_s / base.tokens_per_s:8.3f}" if base else f"{'-':>8}"
        same = "ref" if c is report.contenders[0] else str(report.same_greedy_tokens.get(c.name))
        rows.append(f"{c.name:<42} {c.tokens_per_s:8.1f} {decode} {ratio}  {same}")
    rows.append("")
    rows += [
        f"routing overhead, vocab {o.vocab_size:>6}, {o.sampling:<17}: probe {o.probe_s * 1e3:7.3f} ms "
        f"= {o.fraction:6.2%} of a {o.step_tokens}-token step"
        for o in report.overhead
    ]
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Command line (every flag has a GLIMP_BENCH_* environment twin)
# ---------------------------------------------------------------------------------------------


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GLIMP_BENCH_{name}", default)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `glimp bench decode-speed` / `python -m bench.decode_speed`."""
    add = parser.add_argument
    add(
        "--work-dir",
        type=Path,
        default=Path(_env("WORK_DIR", str(REPO_ROOT / ".cache" / "bench"))),
        help="where the checkpoint, export and genai model are built once (env GLIMP_BENCH_WORK_DIR)",
    )
    add(
        "--model-dir",
        type=Path,
        default=_env("MODEL_DIR", "") or None,
        help="use this exported folder instead of building the 27M model (env GLIMP_BENCH_MODEL_DIR)",
    )
    add(
        "--checkpoint-dir",
        type=Path,
        default=_env("CHECKPOINT_DIR", "") or None,
        help="the checkpoint of --model-dir, for genai's builder (env GLIMP_BENCH_CHECKPOINT_DIR)",
    )
    add(
        "--out-dir",
        type=Path,
        default=Path(_env("OUT_DIR", str(REPO_ROOT / "bench" / "results"))),
        help="where decode_speed.md/json are written (env GLIMP_BENCH_OUT_DIR)",
    )
    add(
        "--no-write",
        action="store_true",
        default=_env("NO_WRITE", "0") == "1",
        help="print only, write no results (env GLIMP_BENCH_NO_WRITE=1)",
    )
    add(
        "--prompt-tokens",
        type=int,
        default=int(_env("PROMPT_TOKENS", "32")),
        help="env GLIMP_BENCH_PROMPT_TOKENS",
    )
    add("--new-tokens", type=int, default=int(_env("NEW_TOKENS", "128")), help="env GLIMP_BENCH_NEW_TOKENS")
    add(
        "--threads",
        type=int,
        default=int(_env("THREADS", "2")),
        help="intra-op threads (env GLIMP_BENCH_THREADS)",
    )
    add("--repeats", type=int, default=int(_env("REPEATS", "5")), help="timed runs (env GLIMP_BENCH_REPEATS)")
    add("--warmup", type=int, default=int(_env("WARMUP", "1")), help="untimed runs (env GLIMP_BENCH_WARMUP)")
    add(
        "--step-tokens",
        type=int,
        default=int(_env("STEP_TOKENS", "32")),
        help="tokens of a reasoning step for the overhead fraction (env GLIMP_BENCH_STEP_TOKENS)",
    )
    add(
        "--genai-venv",
        type=Path,
        default=Path(_env("GENAI_VENV", str(REPO_ROOT / ".venv-genai"))),
        help="venv made by bench/setup_genai_venv.sh (env GLIMP_BENCH_GENAI_VENV)",
    )
    add(
        "--no-genai",
        action="store_true",
        default=_env("NO_GENAI", "0") == "1",
        help="leave onnxruntime-genai out (env GLIMP_BENCH_NO_GENAI=1)",
    )
    add(
        "--no-optimum",
        action="store_true",
        default=_env("NO_OPTIMUM", "0") == "1",
        help="leave optimum out (env GLIMP_BENCH_NO_OPTIMUM=1)",
    )
    add(
        "--wait-idle-s",
        type=float,
        default=float(_env("WAIT_IDLE_S", "0")),
        help="wait up to this long for other processes to leave the CPUs idle (env GLIMP_BENCH_WAIT_IDLE_S)",
    )
    add(
        "--variants",
        action="store_true",
        default=_env("VARIANTS", "0") == "1",
        help="also time alternative ONNX Runtime loops (env GLIMP_BENCH_VARIANTS=1)",
    )
    # Internal: the genai worker, run by this module inside the genai venv.
    add("--worker", choices=["genai"], default=None, help=argparse.SUPPRESS)
    add("--genai-model", type=Path, default=None, help=argparse.SUPPRESS)
    add("--prompt-ids", default="", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    genai = None if args.no_genai else args.genai_venv
    if genai is not None and not (genai / "bin" / "python").is_file():
        raise bad_input(f"no genai venv at {genai}: run `bash bench/setup_genai_venv.sh` or pass --no-genai")
    return BenchConfig(
        work_dir=args.work_dir,
        out_dir=None if args.no_write else args.out_dir,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        genai_venv=genai,
        with_optimum=not args.no_optimum,
        with_variants=args.variants,
        step_tokens=args.step_tokens,
        model_dir=args.model_dir,
        checkpoint_dir=args.checkpoint_dir,
        wait_idle_s=args.wait_idle_s,
    )


def run(args: argparse.Namespace) -> int:
    if args.worker == "genai":
        prompt = [int(t) for t in args.prompt_ids.split(",")]
        genai_worker(args.genai_model, prompt, args.new_tokens, args.threads)
        return 0
    report = run_benchmark(config_from_args(args))
    print(format_table(report))
    if not args.no_write:
        for path in write_report(report, args.out_dir):
            print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_speed", description=__doc__.split("\n")[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
