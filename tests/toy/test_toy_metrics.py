"""Pure scoring functions: AUROC, accuracy and the teacher-forced step scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from glimp_common.errors import BadInputError
from toy.evaluate import summarize
from toy.metrics import accuracy, auroc
from toy.scoring import score_steps, step_spans
from toy.task import Problem, prompt_text, solution_text
from toy.vocab import CharCodec, toy_tokenizer


def _pairwise_auroc(scores: list[float], positives: list[bool]) -> float:
    pos = [s for s, y in zip(scores, positives, strict=True) if y]
    neg = [s for s, y in zip(scores, positives, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_extremes_and_ties() -> None:
    assert auroc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = list(np.round(rng.random(60), 1))  # rounding makes ties
    positives = list(rng.random(60) < 0.3)
    assert auroc(scores, positives) == pytest.approx(_pairwise_auroc(scores, positives))


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(BadInputError, match="needs both classes"):
        auroc([0.1, 0.2], [True, True])


def test_accuracy_counts_unparsed_answers_as_wrong() -> None:
    assert accuracy([386, None, 5], [386, 7, 6]) == pytest.approx(1 / 3)
    with pytest.raises(BadInputError):
        accuracy([], [])


PROBLEM = Problem("test-000001", "59-7*6", 312, ("52=59-7", "312=52*6"))


def _teacher_forced_logits(ids: list[int], vocab: int, wrong_at: int | None) -> np.ndarray:
    """Logits that predict the reference exactly, except position `wrong_at` (made unsure)."""
    logits = np.full((len(ids), vocab), -10.0)
    for position in range(len(ids) - 1):
        logits[position, ids[position + 1]] = 10.0
    if wrong_at is not None:
        logits[wrong_at - 1] = 0.0  # flat: high entropy, and argmax (id 0) is not the reference
    return logits


def test_step_scores_flag_the_wrong_step_and_its_entropy() -> None:
    codec = CharCodec.from_tokenizer(toy_tokenizer())
    ids = codec.encode(prompt_text(PROBLEM.question) + solution_text(PROBLEM))
    spans = step_spans(PROBLEM)
    assert spans == [(len("Q:59-7*6\n"), len("52=59-7\n")), (len("Q:59-7*6\n52=59-7\n"), len("312=52*6\n"))]
    second_step_first_token = spans[1][0]
    scores = score_steps(PROBLEM, ids, _teacher_forced_logits(ids, codec.vocab_size, second_step_first_token))
    assert [s.correct for s in scores] == [True, False]
    assert scores[0].entropy_nats < 1e-3
    assert scores[1].entropy_nats == pytest.approx(np.log(codec.vocab_size))
    # A mistake inside a step (its last digit) makes it wrong without touching its first token.
    inner = score_steps(PROBLEM, ids, _teacher_forced_logits(ids, codec.vocab_size, spans[0][0] + 1))
    assert [s.correct for s in inner] == [False, True]
    assert inner[0].entropy_nats < 1e-3


def test_summary_figures() -> None:
    codec = CharCodec.from_tokenizer(toy_tokenizer())
    ids = codec.encode(prompt_text(PROBLEM.question) + solution_text(PROBLEM))
    steps = score_steps(
        PROBLEM, ids, _teacher_forced_logits(ids, codec.vocab_size, step_spans(PROBLEM)[1][0])
    )
    figures = summarize([PROBLEM, PROBLEM], ["52=59-7\n312=52*6\nA:312", "A:311"], steps)
    assert figures.accuracy == 0.5
    assert (figures.steps, figures.wrong_steps, figures.entropy_auroc) == (2, 1, 1.0)
