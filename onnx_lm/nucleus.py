"""The top-p nucleus of one row of logits, found without sorting the vocabulary, and drawn from.

A Qwen3 row has 151,936 logits. Sorting it costs 10-50 ms on these CPUs, a quarter to a whole
decode step of a 0.6B model; this module's cut costs a handful of vectorised passes (exp, sum,
one radix key, one bincount, one compare), and the draw one more compare.

The distribution is the reference one, exactly
----------------------------------------------
`reference_nucleus` is the textbook nucleus: weights w_i = exp((l_i - max l) / T) in float64,
Z = sum(w); the ids sorted by w descending, ties by id (a stable sort); kept: the shortest prefix
whose running float64 sum reaches top_p * Z; probabilities w_i / (sum of the kept w).
`nucleus` (and `sample_token`'s cut) keeps exactly the same ids with the same w_i (the weights come
from the same function), proven as follows.

1. Bins that respect the order. The bit pattern of a positive float64, read as an integer, orders
   like its value. A token's key is (bits(1.0) - bits(w_i)) >> 44: 256 bins per binade of w, and
   key_i < key_j implies w_i > w_j, so every token of a lower bin precedes every token of a higher
   one in the reference order, and equal weights share a bin. (The bins run down to w = 0; a row
   whose smallest weight is e^-k has about 370 * k of them.)
2. One bincount gives each bin's mass and a cumulative sum over the bins finds the bin b where the
   mass reaches top_p * Z. Every token of a bin before b is kept, none after it; only bin b's
   tokens are sorted (stably, by -w), after splitting it by its next 12 key bits while it holds
   more than `SORT_LIMIT` tokens.
3. The cut inside bin b. The reference compares running sums taken in its order; this module sums
   the same tokens in another order (per bin, then across bins). Each is a float sum of at most V
   non-negative terms, so each is within gamma_V * S of the exact sum S (Higham, "Accuracy and
   Stability of Numerical Algorithms", section 4.2), and the two within 2 * gamma_V * S <=
   `_margin` of each other. The cut c is accepted only when the running sum before c is below
   top_p * Z and the one at c is at or above it, each by more than that margin: the reference's
   sums then fall on the same sides, and since running sums of non-negative terms never decrease,
   its cut is c as well. Otherwise (a band of ~1e-10 of Z: about one flat row in 10^5) the
   reference itself decides.

Drawing (`draw`): one uniform u in [0, 1), located in the cumulative probabilities of the kept
ids in ascending id order: exactly what numpy's `Generator.choice(V, p=...)` does over the whole
truncated vocabulary (zeros add nothing to a running sum), so a seed draws the same tokens as the
full-vocabulary sampler it replaced, while the cumulative sum runs over the kept ids only.
tests/onnx_lm/test_nucleus.py checks ids and probabilities bit for bit against the reference
(ties, near-flat and peaked rows) and the draws with a chi-square test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from glimp_common.errors import BadInputError

_ONE_BITS = int(np.array(1.0).view(np.int64))  # a weight's key is measured down from 1.0 = exp(0)
_FIRST_SHIFT = 44  # 52 - 44 = 8 mantissa bits: 256 bins per binade of w
_SPLIT_BITS = 12  # a crowded bin is split into 4096 by its next 12 key bits
SORT_LIMIT = 4096  # a cut bin with more tokens than this is split again before it is sorted
_UNIT_ROUNDOFF = 2.0**-53


@dataclass(frozen=True)
class Nucleus:
    """The kept tokens of a row: ids ascending, and their probabilities (summing to 1)."""

    ids: NDArray[np.intp]
    probs: NDArray[np.float64]


@dataclass(frozen=True)
class Weights:
    """w = exp((logits - max) / T) in float64 and Z = sum(w): the one arithmetic both cuts share."""

    w: NDArray[np.float64]
    total: float  # Z, numpy's (pairwise) sum of w

    def target(self, top_p: float) -> float:
        """The mass the nucleus must reach."""
        return top_p * self.total


def weights(logits: NDArray[np.floating], temperature: float) -> Weights:
    """Unnormalised softmax weights at `temperature` (> 0), the largest exactly 1.0."""
    row = np.asarray(logits)
    if row.ndim != 1 or row.size == 0:
        raise BadInputError(f"logits must be one non-empty row, got shape {row.shape}")
    w = np.subtract(row, row.max(), dtype=np.float64)
    np.divide(w, temperature, out=w)
    np.exp(w, out=w)
    total = float(w.sum())
    if not math.isfinite(total):
        raise BadInputError("logits contain NaN or +inf: the model's output row is not usable")
    return Weights(w, total)


def normalised(w: NDArray[np.float64], ids: NDArray[np.intp]) -> Nucleus:
    """The nucleus of `ids` (ascending): both cuts normalise through here, so equal ids give equal probs."""
    kept = w[ids]
    return Nucleus(ids, kept / kept.sum())


def reference_nucleus(logits: NDArray[np.floating], temperature: float, top_p: float) -> Nucleus:
    """The textbook nucleus by a full stable sort: what `nucleus` must equal, bit for bit."""
    ws = weights(logits, temperature)
    if top_p >= 1.0:
        return normalised(ws.w, np.arange(ws.w.size))
    order = np.argsort(-ws.w, kind="stable")
    keep = int(np.searchsorted(np.cumsum(ws.w[order]), ws.target(top_p), side="left")) + 1
    return normalised(ws.w, np.sort(order[:keep]))


@dataclass
class _Level:
    """One level of bins: its tokens, their bin keys, the cumulative bin masses, the cut bin."""

    members: NDArray[np.intp] | None  # token ids in this level (None: the whole vocabulary)
    keys: NDArray[np.int64]  # bin of each member
    cum_mass: NDArray[np.float64]  # cumulative mass of the bins, in bin order
    cut_bin: int  # bins before it are kept whole; len(cum_mass) when every bin is kept

    @property
    def above(self) -> float:
        """Mass of the bins kept whole."""
        return float(self.cum_mass[self.cut_bin - 1]) if self.cut_bin else 0.0

    def tokens_of(self, bin_index: int) -> NDArray[np.intp]:
        """Token ids of one bin, ascending."""
        hits = np.flatnonzero(self.keys == bin_index)
        return hits if self.members is None else self.members[hits]


@dataclass
class Cut:
    """The kept set of a row as levels of whole bins plus the sorted head of the last cut bin."""

    w: NDArray[np.float64]
    levels: list[_Level] = field(default_factory=list)
    head: NDArray[np.intp] = field(default_factory=lambda: np.empty(0, np.intp))  # kept, stable order

    def ids(self) -> NDArray[np.intp]:
        """Every kept id, ascending."""
        parts = [self.head]
        for level in self.levels:
            below = np.flatnonzero(level.keys < level.cut_bin)
            parts.append(below if level.members is None else level.members[below])
        return np.sort(np.concatenate(parts))


def nucleus(logits: NDArray[np.floating], temperature: float, top_p: float) -> Nucleus:
    """The kept ids and probabilities at `temperature` (> 0) and `top_p` in (0, 1].

    Equal to `reference_nucleus`'s bit for bit (module docstring).
    """
    cut = find_cut(weights(logits, temperature), top_p)
    return normalised(cut.w, cut.ids())


def find_cut(ws: Weights, top_p: float) -> Cut:
    """The nucleus of `ws` at `top_p`, by bins (the module docstring says why it is the reference's)."""
    if top_p >= 1.0:
        level = _first_level(ws.w)
        level.cut_bin = len(level.cum_mass)
        return Cut(ws.w, [level])
    return _bin_cut(ws, top_p) or _sorted_cut(ws, top_p)


def _first_level(w: NDArray[np.float64]) -> _Level:
    keys = np.subtract(_ONE_BITS, w.view(np.int64))
    np.right_shift(keys, _FIRST_SHIFT, out=keys)
    mass = np.bincount(keys, weights=w)  # as many bins as the smallest weight needs
    return _Level(None, keys, np.cumsum(mass), 0)


def _split(w: NDArray[np.float64], level: _Level, tokens: NDArray[np.intp], shift: int) -> tuple[_Level, int]:
    """The cut bin of `level` (its `tokens`, keyed at `shift`) split by its next bits, and the new shift."""
    finer = max(shift - _SPLIT_BITS, 0)
    keys = np.subtract(_ONE_BITS, w[tokens].view(np.int64))
    np.right_shift(keys, finer, out=keys)
    keys &= (1 << (shift - finer)) - 1  # the bits above `shift` are the bin's, shared by all
    mass = np.bincount(keys, weights=w[tokens], minlength=1 << (shift - finer))
    return _Level(tokens, keys, np.cumsum(mass), 0), finer


def _bin_cut(ws: Weights, top_p: float) -> Cut | None:
    """The cut by bins, or None when the margin is too thin to be sure (the caller sorts instead)."""
    target, above = ws.target(top_p), 0.0
    level, shift, levels = _first_level(ws.w), _FIRST_SHIFT, []
    while True:
        level.cut_bin = int(np.searchsorted(above + level.cum_mass, target, side="left"))
        if level.cut_bin >= len(level.cum_mass):
            return None  # rounding put the cut past the last bin
        levels.append(level)
        above += level.above
        tokens = level.tokens_of(level.cut_bin)
        if tokens.size <= SORT_LIMIT or shift == 0:
            return _head_cut(ws, levels, tokens, above, target)
        level, shift = _split(ws.w, level, tokens, shift)


def _head_cut(
    ws: Weights, levels: list[_Level], tokens: NDArray[np.intp], above: float, target: float
) -> Cut | None:
    """Sort the last cut bin's `tokens` and cut them, if the margin proves the reference cuts there too."""
    order = tokens[np.argsort(-ws.w[tokens], kind="stable")]  # tokens are ascending: ties by id
    head_cum = np.cumsum(ws.w[order])
    running = above + head_cum
    c = int(np.searchsorted(running, target, side="left"))
    margin = _margin(ws)
    if c == running.size or running[c] < target + margin:
        return None
    before = float(running[c - 1]) if c else above
    if before >= target - margin:
        return None
    return Cut(ws.w, levels, order[: c + 1])


def _margin(ws: Weights) -> float:
    """Twice gamma_V * Z with room to spare: how far two summation orders of one prefix can differ."""
    return 4.0 * ws.w.size * _UNIT_ROUNDOFF * ws.total


def _sorted_cut(ws: Weights, top_p: float) -> Cut:
    """The reference's own cut (a full sort), as a Cut: for the rare rows the margin cannot settle."""
    order = np.argsort(-ws.w, kind="stable")
    cum = np.cumsum(ws.w[order])
    keep = min(int(np.searchsorted(cum, ws.target(top_p), side="left")) + 1, cum.size)
    return Cut(ws.w, [], order[:keep])


def draw(cut: Cut, rng: np.random.Generator) -> int:
    """One token id from the cut's kept set, with probability w_i / M: numpy's `Generator.choice`
    inverse CDF (one uniform, ids ascending), so seeded draws match the full-vocabulary sampler."""
    kept = normalised(cut.w, cut.ids())
    cdf = np.cumsum(kept.probs)
    cdf /= cdf[-1]
    return int(kept.ids[int(np.searchsorted(cdf, rng.random(), side="right"))])
