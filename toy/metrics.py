"""Pure numpy figures for the toy pair: exact-answer accuracy and AUROC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glimp_common.errors import BadInputError


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` ranking `positives` above the rest.

    The probability that a random positive scores higher than a random negative (ties count
    half): the Mann-Whitney U statistic over average ranks. Raises BadInputError when either
    class is empty, since the area is then undefined.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise BadInputError(f"scores and positives must be equal-length lists, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise BadInputError(f"AUROC needs both classes; got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    for value in np.unique(s):  # ties share their average rank
        tied = s == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy(predicted: Sequence[int | None], expected: Sequence[int]) -> float:
    """Share of exact answers (an unparseable answer, None, counts as wrong)."""
    if len(predicted) != len(expected) or not expected:
        raise BadInputError(f"need equal, non-empty lists; got {len(predicted)} and {len(expected)}")
    return sum(p == e for p, e in zip(predicted, expected, strict=True)) / len(expected)
