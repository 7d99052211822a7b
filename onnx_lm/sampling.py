"""Entropy and sampling: pure numpy functions over one row of logits.

Kept free of any session or cache so they can be unit-tested on made-up logits.

Both stay cheap at a 152k vocabulary without approximating anything:
- the probe's entropy is -sum p ln p over every logit in float64, from one exp pass:
  with s = l - max l, w = exp(s) and Z = sum w, ln p = s - ln Z, so H = ln Z - sum(w s) / Z;
- a sampled token comes from the exact top-p nucleus (`onnx_lm.nucleus`: the set and the
  probabilities of a full stable sort, found by radix bins instead of a sort; its docstring
  has the proof), drawn by inverse CDF over the kept tokens only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from glimp_common.errors import BadInputError
from onnx_lm.nucleus import draw, find_cut, weights


@dataclass(frozen=True)
class SamplingParams:
    """How a token is drawn from logits."""

    temperature: float = 0.6  # 0 means greedy (argmax); the paper samples steps at 0.6
    top_p: float = 0.95  # nucleus: smallest set of tokens whose probability reaches top_p
    seed: int | None = None  # None: a fresh random stream; an int: reproducible draws

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise BadInputError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise BadInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise BadInputError(f"seed must be an integer or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = SamplingParams(temperature=0.0, top_p=1.0, seed=0)


def log_softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> NDArray[np.float64]:
    """Numerically stable log-probabilities, in float64 so entropies of peaked rows stay exact."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = scaled - scaled.max()
    return shifted - np.log(np.exp(shifted).sum())


def entropy_nats(logits: NDArray[np.floating]) -> float:
    """Shannon entropy H = -sum p ln p of softmax(logits), in nats, over the whole vocabulary.

    Temperature 1, as the paper defines it (its official code approximates H from the top 20
    log-probs; we have every logit, so this is exact). Computed as ln Z - sum(w s) / Z
    (module docstring): one exp pass, float64 throughout.
    """
    row = np.asarray(logits)
    shifted = np.subtract(row, row.max(), dtype=np.float64)
    w = np.exp(shifted)
    total = float(w.sum())
    return math.log(total) - float(np.dot(w, shifted)) / total


def sample_token(
    logits: NDArray[np.floating], params: SamplingParams, rng: np.random.Generator
) -> int:
    """Draw one token id from `logits` with `params` (argmax when greedy).

    Sampled: from the exact nucleus at `params.temperature` and `params.top_p`, consuming one
    uniform of `rng` (`onnx_lm.nucleus.draw`).
    """
    if params.greedy:
        return int(np.argmax(logits))
    return draw(find_cut(weights(logits, params.temperature), params.top_p), rng)


# Random streams under one seed: the edge SLM draws from stream 0, the LLM (in process or on the
# cloud, one generator per conversation) from stream 1, so the two never repeat each other's
# draws and both LLM backends write the same text under the same seed.
SLM_STREAM = 0
LLM_STREAM = 1


def make_rng(params: SamplingParams, stream: int = 0) -> np.random.Generator:
    """A generator for `params.seed`; `stream` separates independent draws under one seed."""
    if params.seed is None:
        return np.random.default_rng()
    return np.random.default_rng([params.seed, stream])
