"""llama.cpp (llama-cpp-python from PyPI) on the same checkpoint: GGUF conversion, Q8_0 / Q4_0, decode.

The venv comes from bench/realsize/setup_llamacpp.sh. Conversion runs llama.cpp's own
convert_hf_to_gguf.py (from the sdist) with the project's Python (torch, transformers) and the
sdist's gguf-py; Q8_0 and Q4_0 come from the f16 GGUF through `llama_cpp.llama_model_quantize`
(requantizing a q8_0 file is refused). Decoding runs in the llama venv as
`python -m bench.realsize.llamacpp --worker ...`, which prints one JSON line per timed run: keep
top-level imports to the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
QUANTS = {"Q8_0": 7, "Q4_0": 2}  # llama_ftype values (LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_0)


@dataclass(frozen=True)
class LlamaCpp:
    """Where llama-cpp-python and its sdist live."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def vendor(self) -> Path:
        found = sorted((self.venv / "sdist").glob("llama_cpp_python-*/vendor/llama.cpp"))
        if not found:
            raise FileNotFoundError(f"no llama.cpp sdist under {self.venv / 'sdist'}: run setup_llamacpp.sh")
        return found[-1]


def convert(tool: LlamaCpp, checkpoint: Path, out_dir: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """f16 GGUF, then Q8_0 and Q4_0; returns the quantized files and each step's seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    f16, times = out_dir / "model-f16.gguf", {}
    if not f16.is_file():
        vendor = tool.vendor()
        env = {**os.environ, "PYTHONPATH": str(vendor / "gguf-py")}
        command = [sys.executable, str(vendor / "convert_hf_to_gguf.py"), str(checkpoint)]
        command += ["--outtype", "f16", "--outfile", str(f16)]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        times["convert_f16_s"] = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed ({done.returncode}): {done.stderr[-2000:]}")
    files = {}
    for name, ftype in QUANTS.items():
        target = out_dir / f"model-{name}.gguf"
        if not target.is_file():
            started = time.perf_counter()
            code = "import llama_cpp, sys; p = llama_cpp.llama_model_quantize_default_params(); "
            code += f"p.ftype = {ftype}; sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), "
            code += "sys.argv[2].encode(), p))"
            subprocess.run([str(tool.python), "-c", code, str(f16), str(target)], check=True)
            times[f"quantize_{name}_s"] = time.perf_counter() - started
        files[name] = target
    return files, times


def decode(
    tool: LlamaCpp, model: Path, prompt: list[int], new_tokens: int, threads: int, repeats: int
) -> dict:
    """Greedy and sampled (T 0.6, top-p 0.95, no top-k / min-p) runs, interleaved, in the llama venv."""
    command = [str(tool.python), "-m", "bench.realsize.llamacpp", "--worker", "--model", str(model)]
    command += ["--prompt-ids", ",".join(map(str, prompt)), "--new-tokens", str(new_tokens)]
    command += ["--threads", str(threads), "--repeats", str(repeats)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp worker failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---- the worker (inside the llama venv) ------------------------------------------------------


def _generate(llm: object, prompt: list[int], new_tokens: int, sampled: bool) -> tuple[float, float]:
    llm.reset()  # type: ignore[attr-defined]  # no prefix reuse between runs: every run prefills
    options = {"temp": 0.6, "top_p": 0.95, "top_k": 0, "min_p": 0.0} if sampled else {"temp": 0.0}
    started, first = time.perf_counter(), 0.0
    for count, _ in enumerate(llm.generate(prompt, repeat_penalty=1.0, **options), 1):  # type: ignore[attr-defined]
        if count == 1:
            first = time.perf_counter() - started
        if count == new_tokens:
            break
    return time.perf_counter() - started, first


def worker(args: argparse.Namespace) -> None:
    import statistics

    import llama_cpp

    llm = llama_cpp.Llama(str(args.model), n_threads=args.threads, n_ctx=512, verbose=False, seed=0)
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    runs: dict[str, list[tuple[float, float]]] = {"greedy": [], "sampled": []}
    for mode in runs:
        _generate(llm, prompt, args.new_tokens, mode == "sampled")  # warm-up
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(_generate(llm, prompt, args.new_tokens, mode == "sampled"))
    out = {"llama_cpp_version": llama_cpp.__version__}
    for mode, timings in runs.items():
        total = statistics.median(t for t, _ in timings)
        decode_s = statistics.median(t - f for t, f in timings)
        out[mode] = {
            "tokens_per_s": args.new_tokens / total,
            "decode_tokens_per_s": (args.new_tokens - 1) / decode_s,
        }
    print(json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realsize.llamacpp")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    worker(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
