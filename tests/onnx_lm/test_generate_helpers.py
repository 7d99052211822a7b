"""The decode loop's stop-string and streaming helpers, and the LCP helper, on plain strings."""

from __future__ import annotations

import pytest

from glimp_common.errors import BadInputError
from onnx_lm.context import common_prefix_length
from onnx_lm.generate import StopCriteria, _find_stop, _overlap, _stream


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_find_stop_returns_earliest() -> None:
    assert _find_stop("ab\n\ncd</think>", ("</think>", "\n\n")) == (2, "\n\n")
    assert _find_stop("abc", ("\n\n",)) is None


def test_streaming_holds_back_a_possible_stop_prefix() -> None:
    out: list[str] = []
    emitted = _stream("hello\n", 0, ("\n\n",), out.append)
    assert out == ["hello"] and emitted == 5  # the "\n" may start "\n\n": held back
    emitted = _stream("hello\nworld", emitted, ("\n\n",), out.append)
    assert out == ["hello", "\nworld"] and emitted == 11
    assert _overlap("abc</th", "</think>") == 4


def test_stop_criteria_validation() -> None:
    with pytest.raises(BadInputError):
        StopCriteria(max_tokens=0)
    with pytest.raises(BadInputError):
        StopCriteria(stop_strings=("",))
