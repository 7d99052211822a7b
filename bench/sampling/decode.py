"""Greedy against sampled decoding of one exported model, side by side: what sampling costs per token.

The loop is onnx_lm's (prefill, then `decode_one` per token); the only difference between the two
contenders is `sample_token`'s parameters, so the tok/s ratio is the cost of sampling. A random
model's tokens differ between the two, but every run feeds the same number of tokens, so the model
does the same work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.decode.common import Contender, ContenderResult, RunTiming, onnx_lm_generate, time_interleaved
from bench.sampling.rows import PAPER
from onnx_lm.sampling import GREEDY, SamplingParams, entropy_nats, sample_token


@dataclass(frozen=True)
class DecodePlan:
    """One greedy-vs-sampled comparison."""

    new_tokens: int = 128
    repeats: int = 5  # timed runs per contender, interleaved; the median is reported
    warmup: int = 1


def decode_run(
    lm: Any, prompt: list[int], plan: DecodePlan, params: SamplingParams
) -> tuple[list[int], RunTiming]:
    """Prompt -> `plan.new_tokens` tokens drawn with `params`, timed (prefill time apart)."""
    return onnx_lm_generate(lm, prompt, plan.new_tokens, params)


def greedy_vs_sampled(lm: Any, prompt: list[int], plan: DecodePlan) -> list[ContenderResult]:
    """[greedy, sampled (T 0.6, top-p 0.95)] on the same session, interleaved."""
    contenders = [
        Contender("greedy", lambda: decode_run(lm, prompt, plan, GREEDY)),
        Contender("sampled T=0.6 top-p=0.95", lambda: decode_run(lm, prompt, plan, PAPER)),
    ]
    return time_interleaved(contenders, plan)


@dataclass(frozen=True)
class StepOverhead:
    """The router's work per step (probe entropy + one draw) against the step's decode time."""

    probe_ms: float  # entropy + sample_token on the model's own last logits, median
    token_ms: float  # one decode step of the model (greedy median)
    step_tokens: int

    @property
    def fraction(self) -> float:
        return self.probe_ms / (self.token_ms * self.step_tokens)


def step_overhead(lm: Any, prompt: list[int], token_ms: float, step_tokens: int = 32) -> StepOverhead:
    """Time entropy + a sampled draw on the logits the model really emits after `prompt`."""
    cache = lm.new_cache()
    logits = lm.prefill(cache, prompt)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        entropy_nats(logits)
        sample_token(logits, PAPER, rng)
        times.append(time.perf_counter() - started)
    return StepOverhead(float(np.median(times)) * 1e3, token_ms, step_tokens)


def load(folder: Path, threads: int) -> Any:
    from onnx_lm.session import CausalLM, SessionConfig

    return CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=threads))
