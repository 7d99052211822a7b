"""The toy task generator: format, value range, disjoint splits, determinism, bad settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glimp_common.errors import BadInputError
from toy.task import (
    ALPHABET,
    Problem,
    TaskConfig,
    parse_answer,
    problems,
    prompt_text,
    read_jsonl,
    solution_text,
    split_of,
    take,
    train_batch,
    write_jsonl,
)

STEP = re.compile(r"^(\d+)=(\d+)([-+*])(\d+)$")


def _check_problem(problem: Problem, config: TaskConfig) -> None:
    """Every step is result-first, true arithmetic, chained, and within the value range."""
    value = int(re.match(r"\d+", problem.question).group())
    assert config.start_min <= value <= config.start_max
    rebuilt = str(value)
    assert config.min_ops <= len(problem.steps) <= config.max_ops
    for step in problem.steps:
        result, left, op, operand = STEP.match(step).groups()
        assert int(left) == value
        expected = {"+": value + int(operand), "-": value - int(operand), "*": value * int(operand)}[op]
        assert int(result) == expected
        assert 0 <= expected <= config.max_value
        if op == "*":
            assert 2 <= int(operand) <= 9
        rebuilt += op + operand
        value = expected
    assert rebuilt == problem.question
    assert problem.answer == value


def test_problems_follow_the_result_first_format() -> None:
    config = TaskConfig()
    sample = take(problems("test", 0), 300)
    for problem in sample:
        _check_problem(problem, config)
    assert {len(p.steps) for p in sample} == {2, 3, 4, 5}
    ops = "".join(re.sub(r"\d", "", p.question) for p in sample)
    assert set(ops) == {"+", "-", "*"}


def test_model_text_is_prompt_then_steps_then_answer() -> None:
    problem = Problem("test-000001", "59-7*6+74", 386, ("52=59-7", "312=52*6", "386=312+74"))
    assert prompt_text(problem.question) == "Q:59-7*6+74\n"
    assert solution_text(problem) == "52=59-7\n312=52*6\n386=312+74\nA:386"
    assert set(prompt_text(problem.question) + solution_text(problem)) <= set(ALPHABET)


def test_ids_are_numbered_per_split() -> None:
    assert [p.id for p in take(problems("dev", 3), 3)] == ["dev-000001", "dev-000002", "dev-000003"]


def test_splits_are_disjoint_whatever_the_seeds() -> None:
    test = {p.question for p in take(problems("test", 0), 400)}
    dev = {p.question for p in take(problems("dev", 0), 400)}
    other_seed_test = {p.question for p in take(problems("test", 1), 400)}
    train = {p.question for step in range(300) for p in train_batch(0, step, 48)}
    assert len(test) == len(dev) == 400
    assert not test & dev
    assert not train & (test | dev | other_seed_test)
    assert all(split_of(q) == "train" for q in train)
    assert all(split_of(q) == "test" for q in test)


def test_streams_are_seeded() -> None:
    assert take(problems("test", 7), 20) == take(problems("test", 7), 20)
    assert take(problems("test", 7), 20) != take(problems("test", 8), 20)
    assert train_batch(5, 11, 8) == train_batch(5, 11, 8)
    assert train_batch(5, 11, 8) != train_batch(5, 12, 8)


def test_a_narrower_task_is_respected() -> None:
    config = TaskConfig(min_ops=1, max_ops=2, max_value=200)
    for problem in take(problems("dev", 0, config), 100):
        _check_problem(problem, config)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    sample = take(problems("dev", 0), 5)
    path = tmp_path / "dev.jsonl"
    assert write_jsonl(sample, path) == 5
    assert read_jsonl(path) == sample
    first = path.read_text().splitlines()[0]
    assert first.startswith('{"id": "dev-000001", "question": ')
    assert '"steps": [' in first


def test_parse_answer() -> None:
    assert parse_answer("52=59-7\nA:386") == 386
    assert parse_answer("52=59-7\nA:38\n6") == 38
    assert parse_answer("52=59-7\n") is None
    assert parse_answer("A:") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_ops": 0}, "min_ops must be >= 1"),
        ({"min_ops": 3, "max_ops": 2}, "max_ops must be >= 3"),
        ({"start_min": -1}, "start_min must be >= 0"),
        ({"max_value": 50}, "max_value must be >= 99"),
        ({"min_ops": 2.0}, "min_ops must be an integer"),
        ({"max_ops": True}, "max_ops must be an integer"),
    ],
)
def test_impossible_task_settings_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        TaskConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1.5, "3", None, True])
def test_seeds_must_be_integers(seed: object) -> None:
    with pytest.raises(BadInputError, match="seed must be an integer"):
        next(problems("test", seed))  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="seed must be an integer"):
        train_batch(seed, 0, 4)  # type: ignore[arg-type]


def test_bad_split_batch_and_file_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="split must be one of"):
        next(problems("validation", 0))
    with pytest.raises(BadInputError, match="batch_size must be >= 1"):
        train_batch(0, 0, 0)
    with pytest.raises(BadInputError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "1+2"}\n')
    with pytest.raises(BadInputError, match="malformed"):
        read_jsonl(bad)
