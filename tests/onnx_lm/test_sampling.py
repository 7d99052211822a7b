"""Entropy and sampling on made-up logits: pure functions, exact expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glimp_common.errors import BadInputError
from onnx_lm.sampling import (
    GREEDY,
    SamplingParams,
    entropy_nats,
    log_softmax,
    make_rng,
    sample_token,
)


def test_entropy_of_uniform_is_log_vocab() -> None:
    for vocab in (2, 10, 151_936):
        assert entropy_nats(np.zeros(vocab, dtype=np.float32)) == pytest.approx(math.log(vocab), rel=1e-9)


def test_entropy_of_one_hot_is_zero_and_shift_invariant() -> None:
    logits = np.array([1000.0, 0.0, 0.0, 0.0], dtype=np.float32)
    assert entropy_nats(logits) == pytest.approx(0.0, abs=1e-12)
    a = np.array([0.3, -1.2, 2.5, 0.0], dtype=np.float32)
    assert entropy_nats(a) == pytest.approx(entropy_nats(a + 50.0), rel=1e-6)


def test_entropy_matches_hand_computation() -> None:
    probs = np.array([0.5, 0.25, 0.25])
    expected = -(probs * np.log(probs)).sum()
    assert entropy_nats(np.log(probs).astype(np.float32)) == pytest.approx(expected, rel=1e-6)


def test_log_softmax_normalises_in_float64() -> None:
    logp = log_softmax(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert logp.dtype == np.float64
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-12)


def test_greedy_is_argmax_and_seeded_sampling_repeats() -> None:
    logits = np.array([0.1, 3.0, 0.2, 2.9], dtype=np.float32)
    assert sample_token(logits, GREEDY, make_rng(GREEDY)) == 1
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=7)
    first = [sample_token(logits, params, make_rng(params, stream=3)) for _ in range(5)]
    again = [sample_token(logits, params, make_rng(params, stream=3)) for _ in range(5)]
    assert first == again


def test_low_temperature_concentrates_samples() -> None:
    logits = np.array([2.0, 1.0, 0.0], dtype=np.float32)
    params = SamplingParams(temperature=0.05, top_p=1.0, seed=1)
    rng = make_rng(params)
    draws = [sample_token(logits, params, rng) for _ in range(200)]
    assert draws.count(0) == 200


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -0.1}, {"temperature": float("nan")}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": 1.5}],
)
def test_bad_sampling_params_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadInputError):
        SamplingParams(**kwargs)  # type: ignore[arg-type]
