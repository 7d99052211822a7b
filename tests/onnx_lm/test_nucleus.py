"""The binned nucleus against the full-sort reference: the same ids and probabilities, bit for bit,
and draws that follow them (chi-square)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
from numpy.typing import NDArray

from glimp_common.errors import BadInputError
from onnx_lm.nucleus import Nucleus, find_cut, nucleus, reference_nucleus, weights
from onnx_lm.sampling import SamplingParams, entropy_nats, make_rng, sample_token

QWEN3_VOCAB = 151_936
TOP_PS = (0.05, 0.5, 0.9, 0.95, 0.999, 1.0)


def _rows(vocab: int, seed: int) -> Iterator[tuple[str, NDArray[np.float32]]]:
    """Rows of every shape a model (or a random-weight model) emits."""
    rng = np.random.default_rng(seed)
    for scale in (0.05, 0.64, 3.0, 12.0):
        yield f"normal*{scale}", (rng.standard_normal(vocab) * scale).astype(np.float32)
    ties = np.round(rng.standard_normal(vocab) * 2).astype(np.float32)  # a few values, many ties each
    yield "ties", ties
    top_tied = (rng.standard_normal(vocab) * 2).astype(np.float32)
    top_tied[rng.choice(vocab, min(40, vocab), replace=False)] = top_tied.max() + 1  # the max itself tied
    yield "tied max", top_tied
    yield "near-flat", (rng.standard_normal(vocab) * 1e-5).astype(np.float32)
    spike = (rng.standard_normal(vocab) * 0.64).astype(np.float32)
    spike[rng.choice(vocab, min(8, vocab), replace=False)] += 14.0
    yield "spike", spike
    masked = (rng.standard_normal(vocab) * 3).astype(np.float32)
    masked[rng.choice(vocab, vocab // 3, replace=False)] = -np.inf  # weights exactly 0
    yield "masked", masked


def _assert_same(fast: Nucleus, ref: Nucleus, label: str) -> None:
    assert np.array_equal(fast.ids, ref.ids), f"{label}: kept ids differ"
    assert np.array_equal(fast.probs, ref.probs), f"{label}: probabilities differ"


@pytest.mark.parametrize("vocab", [2, 7, 1000, 5000])
def test_nucleus_equals_the_full_sort_bit_for_bit(vocab: int) -> None:
    for seed in range(4 if vocab <= 1000 else 1):
        for name, row in _rows(vocab, seed):
            for temperature in (0.3, 0.6, 1.0, 1.7):
                for top_p in TOP_PS:
                    label = f"{name} V={vocab} seed={seed} T={temperature} top_p={top_p}"
                    fast = nucleus(row, temperature, top_p)
                    _assert_same(fast, reference_nucleus(row, temperature, top_p), label)


def test_nucleus_equals_the_full_sort_at_qwen3_vocabulary() -> None:
    for name, row in _rows(QWEN3_VOCAB, seed=11):
        for top_p in (0.5, 0.95):
            label = f"{name} T=0.6 top_p={top_p}"
            _assert_same(nucleus(row, 0.6, top_p), reference_nucleus(row, 0.6, top_p), label)


def test_the_bins_decide_ordinary_rows_without_the_sort() -> None:
    """The equality above must come from the bins: a cut without levels is the sorted fallback."""
    for name, row in _rows(5000, seed=5):
        if name == "ties":
            continue  # integer-valued weights can hit top_p * Z exactly: the fallback's case
        for top_p in (0.5, 0.95):
            assert find_cut(weights(row, 0.6), top_p).levels, f"{name} top_p={top_p} fell back to the sort"


def test_a_crowded_bin_is_split_before_it_is_sorted() -> None:
    row = (np.random.default_rng(2).standard_normal(QWEN3_VOCAB) * 1e-5).astype(np.float32)
    cut = find_cut(weights(row, 0.6), 0.95)
    assert len(cut.levels) >= 2
    _assert_same(nucleus(row, 0.6, 0.95), reference_nucleus(row, 0.6, 0.95), "near-flat 152k")


def test_an_exact_hit_of_top_p_falls_back_to_the_reference() -> None:
    """Equal weights sum exactly: top_p * Z is met with no margin, so the sort decides."""
    row = np.zeros(1000, dtype=np.float32)
    assert not find_cut(weights(row, 1.0), 0.5).levels
    kept = nucleus(row, 1.0, 0.5)
    assert kept.ids.tolist() == list(range(500))  # ties keep the lowest ids, as a stable sort does
    _assert_same(kept, reference_nucleus(row, 1.0, 0.5), "all equal")


def test_nucleus_keeps_smallest_set_reaching_top_p() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    # top_p away from the sums 0.5, 0.8, 0.95: at an exact tie (0.8) the float rounding of exp
    # decides, differently on different CPUs (the exact-hit test covers ties against the reference).
    kept = nucleus(logits, temperature=1.0, top_p=0.75)
    assert kept.ids.tolist() == [0, 1]  # 0.5 + 0.3 reaches 0.75, 0.5 alone does not
    assert kept.probs[0] == pytest.approx(0.5 / 0.8)
    assert nucleus(logits, 1.0, 0.85).ids.tolist() == [0, 1, 2]
    assert nucleus(logits, 1.0, 1.0).probs.sum() == pytest.approx(1.0)


def _chi_square_critical(dof: int, z: float = 3.719) -> float:
    """Wilson-Hilferty: the chi-square quantile at normal quantile `z` (3.719: p = 1e-4)."""
    a = 2.0 / (9.0 * dof)
    return float(dof * (1.0 - a + z * math.sqrt(a)) ** 3)


def _draw_counts(row: NDArray[np.float32], params: SamplingParams, draws: int) -> NDArray[np.int64]:
    rng = make_rng(params)
    tokens = np.fromiter((sample_token(row, params, rng) for _ in range(draws)), np.int64, draws)
    return np.bincount(tokens, minlength=row.size)


def _chi_square(
    counts: NDArray[np.int64], ids: NDArray[np.intp], probs: NDArray[np.float64], groups: int
) -> float:
    """Chi-square of `counts` against the nucleus, its ids pooled into `groups` of near-equal mass."""
    edges = np.searchsorted(np.cumsum(probs), np.linspace(0, 1, groups + 1)[1:-1])
    pooled = np.add.reduceat(counts[ids], np.r_[0, edges])
    expected = np.add.reduceat(probs, np.r_[0, edges]) * counts.sum()
    return float(((pooled - expected) ** 2 / expected).sum())


@pytest.mark.parametrize(
    ("name", "vocab", "scale", "top_p", "draws", "groups"),
    [
        ("peaked", 3000, 2.5, 0.9, 20_000, 40),  # a few hundred kept: many bins and a sorted head
        ("flat", 20_000, 0.64, 0.95, 10_000, 30),  # most of the vocabulary kept, in whole bins
    ],
)
def test_draws_follow_the_nucleus(
    name: str, vocab: int, scale: float, top_p: float, draws: int, groups: int
) -> None:
    row = (np.random.default_rng(9).standard_normal(vocab) * scale).astype(np.float32)
    params = SamplingParams(temperature=0.6, top_p=top_p, seed=4)
    ref = reference_nucleus(row, params.temperature, params.top_p)
    counts = _draw_counts(row, params, draws)
    outside = np.setdiff1d(np.flatnonzero(counts), ref.ids)
    assert outside.size == 0, f"{name}: drew {outside.size} tokens outside the nucleus"
    statistic = _chi_square(counts, ref.ids, ref.probs, groups)
    assert statistic < _chi_square_critical(groups - 1), f"{name}: chi-square {statistic:.1f}"


def test_draws_of_the_top_p_one_row_cover_every_bin() -> None:
    """top_p = 1: every token is kept, the draw walks the whole-bin level alone."""
    row = (np.random.default_rng(3).standard_normal(500) * 1.5).astype(np.float32)
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=2)
    ref = reference_nucleus(row, 1.0, 1.0)
    counts = _draw_counts(row, params, 20_000)
    assert _chi_square(counts, ref.ids, ref.probs, 30) < _chi_square_critical(29)


def test_entropy_is_exact_over_the_whole_vocabulary() -> None:
    """ln Z - sum(w s) / Z against -sum p ln p summed exactly (math.fsum), on every row shape."""
    for name, row in _rows(QWEN3_VOCAB, seed=1):
        if name == "masked":
            continue  # -inf logits: 0 * ln 0 is taken as 0 below, which the model never needs
        logp = row.astype(np.float64) - row.max()
        logp -= math.log(math.fsum(np.exp(logp)))
        exact = -math.fsum(np.exp(logp) * logp)
        assert entropy_nats(row) == pytest.approx(exact, rel=1e-11, abs=1e-13), name


def test_unusable_logits_are_refused_in_one_line() -> None:
    row = np.zeros(10, dtype=np.float32)
    row[3] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        nucleus(row, 0.6, 0.95)
    with pytest.raises(BadInputError, match="one non-empty row"):
        nucleus(np.zeros((2, 3), dtype=np.float32), 0.6, 0.95)
