"""Per-call cost of drawing one token from a 151,936-logit row: greedy, the binned nucleus, and before.

`before_sample` / `before_entropy` are onnx_lm's previous functions (commit df0ae92: a float64
log-softmax, a partial-sort nucleus that widens by 8x, `Generator.choice` over the vocabulary),
kept here so the two are timed side by side on one machine in one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from onnx_lm.nucleus import reference_nucleus
from onnx_lm.sampling import GREEDY, SamplingParams, entropy_nats, sample_token

QWEN3_VOCAB = 151_936
PAPER = SamplingParams(temperature=0.6, top_p=0.95, seed=0)  # the paper's step sampling

# Row shapes: a random-weight model's near-flat logits (the 0.6B's spread), a trained LM's spread
# (a few dominant tokens, a long tail), and a confident step (a handful of tokens, the rest far below).
ROW_KINDS: dict[str, Callable[[np.random.Generator], NDArray[np.float32]]] = {
    "random-weights (N(0, 0.64))": lambda rng: (rng.standard_normal(QWEN3_VOCAB) * 0.64).astype(np.float32),
    "spread (N(0, 3))": lambda rng: (rng.standard_normal(QWEN3_VOCAB) * 3.0).astype(np.float32),
    "confident (8 tokens +14)": lambda rng: _confident(rng),
}


def _confident(rng: np.random.Generator) -> NDArray[np.float32]:
    row = (rng.standard_normal(QWEN3_VOCAB) * 0.64).astype(np.float32)
    row[rng.choice(QWEN3_VOCAB, 8, replace=False)] += 14.0
    return row


def _before_log_softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max()
    return shifted - np.log(np.exp(shifted).sum())  # type: ignore[no-any-return]


def before_entropy(logits: NDArray[np.floating]) -> float:
    logp = _before_log_softmax(logits)
    return float(-(np.exp(logp) * logp).sum())


def before_sample(logits: NDArray[np.floating], params: SamplingParams, rng: np.random.Generator) -> int:
    probs = np.exp(_before_log_softmax(logits, params.temperature))
    k = min(64, probs.size)
    while True:
        kth = np.partition(probs, probs.size - k)[probs.size - k]
        head = np.flatnonzero(probs >= kth)
        order = head[np.argsort(-probs[head], kind="stable")]
        cumulative = np.cumsum(probs[order])
        if cumulative[-1] >= params.top_p or k == probs.size:
            break
        k = min(k * 8, probs.size)
    keep = int(np.searchsorted(cumulative, params.top_p, side="left")) + 1
    truncated = np.zeros_like(probs)
    truncated[order[:keep]] = probs[order[:keep]]
    return int(rng.choice(probs.shape[0], p=truncated / truncated.sum()))


@dataclass(frozen=True)
class CallCost:
    """Median cost of one call on one row kind."""

    row: str
    call: str
    wall_ms: float  # elapsed time (other processes' load included)
    cpu_ms: float  # this process's CPU time (less sensitive to a shared machine)
    kept_tokens: int  # size of the T 0.6 / top-p 0.95 nucleus of the row

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _calls(row: NDArray[np.float32], rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    return {
        "greedy (argmax)": lambda: sample_token(row, GREEDY, rng),
        "sampled, binned nucleus (now)": lambda: sample_token(row, PAPER, rng),
        "sampled, partial sort (before)": lambda: before_sample(row, PAPER, rng),
        "full stable sort (reference)": lambda: reference_nucleus(row, PAPER.temperature, PAPER.top_p),
        "entropy (now)": lambda: entropy_nats(row),
        "entropy (before)": lambda: before_entropy(row),
    }


def _median_ms(call: Callable[[], object], iterations: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(iterations):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def row_costs(iterations: int, seed: int = 0) -> list[CallCost]:
    """Every call on every row kind, median of `iterations` (a tenth of them for the sorts)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, make in ROW_KINDS.items():
        row = make(rng)
        kept = reference_nucleus(row, PAPER.temperature, PAPER.top_p).ids.size
        for name, call in _calls(row, rng).items():
            slow = "sort" in name or "before" in name and "sampled" in name
            wall, cpu = _median_ms(call, max(3, iterations // 10) if slow else iterations)
            out.append(CallCost(kind, name, wall, cpu, kept))
    return out
