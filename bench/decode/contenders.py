"""The decode benchmark's contenders: onnx_lm, optimum, and onnxruntime-genai in its own venv.

onnxruntime-genai lives in a separate virtual environment (`bench/decode/setup_genai_venv.sh`): its
builder converts the checkpoint once, and `GenaiWorker` keeps a worker process (`python -m
bench.decode.speed --worker genai`, served by `genai_worker`) alive there for the timed runs.
That worker imports this module without the project's packages: keep top-level imports to the
standard library and numpy.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode.common import REPO_ROOT, Contender, RunTiming, bench_error, onnx_lm_generate

log = logging.getLogger(__name__)


def onnx_lm_contender(folder: Path, prompt: list[int], new_tokens: int, threads: int) -> Contender:
    from onnx_lm.session import CausalLM, SessionConfig

    lm = CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=threads))
    return Contender(
        "onnx_lm",
        lambda: onnx_lm_generate(lm, prompt, new_tokens),
        "CausalLM.prefill + decode_one, IO binding, KV cache as OrtValues",
    )


def optimum_contender(folder: Path, prompt: list[int], new_tokens: int, threads: int) -> Contender:
    """optimum's ORTModelForCausalLM.generate on the very same model.onnx."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
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
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,  # a random model may emit EOS early; every run makes the same count
            pad_token_id=model.config.pad_token_id,
        )
        return out[0, len(prompt) :].tolist(), RunTiming(time.perf_counter() - started, None)

    return Contender("optimum", generate, "ORTModelForCausalLM.generate, greedy, same model.onnx")


# ---------------------------------------------------------------------------------------------
# onnxruntime-genai, driven from the project's venv
# ---------------------------------------------------------------------------------------------


def ensure_genai_model(checkpoint: Path, out_dir: Path, venv: Path) -> Path:
    """onnxruntime-genai's builder run on `checkpoint` (fp32, CPU), in the genai venv, once."""
    if (out_dir / "genai_config.json").is_file():
        return out_dir
    builder = [str(venv / "bin" / "python"), "-m", "onnxruntime_genai.models.builder"]
    command = [*builder, "-i", str(checkpoint), "-o", str(out_dir), "-p", "fp32", "-e", "cpu"]
    command += ["-c", str(out_dir.parent / "genai_cache")]
    log.info("building the genai model: %s", shlex.join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        raise bench_error(
            f"onnxruntime-genai's builder failed ({done.returncode}); its log ends:\n{done.stderr[-3000:]}"
        )
    return out_dir


class GenaiWorker:
    """The genai worker, alive in the genai venv; one JSON line per generation."""

    def __init__(self, venv: Path, genai_dir: Path, prompt: list[int], new_tokens: int, threads: int) -> None:
        command = [str(venv / "bin" / "python"), "-m", "bench.decode.speed", "--worker", "genai"]
        command += ["--genai-model", str(genai_dir), "--prompt-ids", ",".join(map(str, prompt))]
        command += ["--new-tokens", str(new_tokens), "--threads", str(threads)]
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
