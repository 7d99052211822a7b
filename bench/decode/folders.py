"""Greedy decode of several exported folders of one checkpoint, side by side in one run.

    .venv/bin/python -m bench.decode.folders A_DIR B_DIR [...] [--threads 2] [--new-tokens 128] [--repeats 5]

For comparing two exports of the same model (a graph change, a precision) where comparing two
separate runs would measure the machine's load instead: every folder is loaded once, then timed
round-robin (bench.decode.common.time_interleaved: warm-up, then A B, A B, ...), median per
folder. The prompt is the real-size run's question under the first folder's tokenizer; each prints
its tok/s and the ratio to the first.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from bench.decode.common import Contender, onnx_lm_generate, time_interleaved
from bench.realsize.run import prompt_tokens
from bench.sampling.decode import DecodePlan, load
from onnx_lm.sampling import GREEDY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="exported folders, the first the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    plan = DecodePlan(args.new_tokens, args.repeats)
    prompt = prompt_tokens(args.folders[0])
    models = [load(folder, args.threads) for folder in args.folders]
    contenders = [
        Contender(str(folder), functools.partial(onnx_lm_generate, lm, prompt, plan.new_tokens, GREEDY))
        for folder, lm in zip(args.folders, models, strict=True)
    ]
    load_before = os.getloadavg()[0]
    results = time_interleaved(contenders, plan)
    print(f"greedy, {len(prompt)}-token prompt, {plan.new_tokens} new tokens, {args.threads} threads, "
          f"median of {plan.repeats} interleaved; load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    for result in results:
        ratio = result.tokens_per_s / results[0].tokens_per_s
        print(f"{result.tokens_per_s:7.2f} tok/s  {ratio:5.2f}x  {result.name}")


if __name__ == "__main__":
    main()
