"""Answer checkers and problem files of the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.e2e.checkers import ExactInt, ExactText, check_references, make_checker
from bench.e2e.problems import read_problems
from glimp_common.errors import BadInputError


@pytest.mark.parametrize(
    ("output", "predicted", "correct"),
    [
        ("52=59-7\n312=52*6\n386=312+74\nA:386", "386", True),  # one call: reasoning then answer
        ("52=59-7\nA:" + "386", "386", True),  # the loop: marker step, then the answer text
        ("52=59-7\nA:386\n1=1", "386", True),  # rambling after the answer does not count
        ("386=312+74\nA:385", "385", False),  # an intermediate result is never taken for the answer
        ("386=312+74\nA:", None, False),  # marker but no number
        ("A:0386", "386", True),
    ],
)
def test_exact_int_reads_the_number_after_the_last_marker(output: str, predicted: str | None,
                                                          correct: bool) -> None:
    verdict = ExactInt("A:").check(output, "386")
    assert (verdict.predicted, verdict.correct) == (predicted, correct)


def test_exact_int_without_marker_takes_the_last_integer() -> None:
    checker = ExactInt(None)
    assert checker.check("12 + 30 = 42, so the answer is 42", "42").correct
    assert checker.check("I think -7", "-7").predicted == "-7"
    assert checker.check("no digits at all", "5").predicted is None


def test_exact_int_refuses_a_text_reference() -> None:
    with pytest.raises(BadInputError, match="exact-text"):
        check_references(ExactInt("A:"), ["42", "forty-two"])


def test_exact_text_compares_the_first_answer_line() -> None:
    checker = ExactText("</think>")
    assert checker.check("steps</think> Paris \nmore", "Paris").correct
    assert not checker.check("steps</think>Lyon", "Paris").correct


def test_make_checker_by_name_or_import_path() -> None:
    assert make_checker("exact-int", "A:") == ExactInt("A:")
    assert make_checker("bench.e2e.checkers:ExactText", None) == ExactText(None)
    with pytest.raises(BadInputError, match="unknown checker"):
        make_checker("fuzzy", None)
    with pytest.raises(BadInputError, match="could not be imported"):
        make_checker("bench.nowhere:Checker", None)


def _write(path: Path, *records: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_read_problems_takes_the_generator_format_and_limits(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", {"id": "test-000001", "question": "59-7*6+74", "answer": 386,
                                         "steps": ["52=59-7", "312=52*6", "386=312+74"]},
                  "", {"id": 2, "question": "1+1", "answer": "2"})
    problems = read_problems(path)
    assert [(p.id, p.question, p.answer) for p in problems] == [("test-000001", "59-7*6+74", "386"),
                                                                ("2", "1+1", "2")]
    assert len(read_problems(path, limit=1)) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"id": "a", "question": "1+1"}, "no answer"),
        ("{not json", "not valid JSON"),
        ({"id": "a", "question": " ", "answer": 1}, "empty question"),
        ({"id": "a", "question": "1", "answer": [1]}, "number or a string"),
    ],
)
def test_read_problems_names_what_is_wrong(tmp_path: Path, line: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        read_problems(_write(tmp_path / "p.jsonl", line))


def test_read_problems_refuses_duplicates_and_missing_files(tmp_path: Path) -> None:
    same = {"id": "a", "question": "1+1", "answer": 2}
    with pytest.raises(BadInputError, match="more than once"):
        read_problems(_write(tmp_path / "p.jsonl", same, same))
    with pytest.raises(BadInputError, match="does not exist"):
        read_problems(tmp_path / "missing.jsonl")
