"""The toy reasoning task: multi-step arithmetic chains written result-first.

A problem is a start value and 2-5 operations applied left to right::

    question  59-7*6+74
    steps     52=59-7 / 312=52*6 / 386=312+74
    answer    386

Each step puts its *result* first, so the first token of a step already commits to the hard
part (the arithmetic). With operation-first steps ("52*6=312") the first token is a copy of the
previous result and its entropy says nothing about whether the step will be right (measured at
chance level).

Problems are drawn from seeded streams. Train, dev and test are disjoint by construction: a
question belongs to exactly one split, fixed by a hash of its text, so no test question can
ever appear in a training batch whatever the seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from glimp_common.errors import BadInputError

SPLITS = ("train", "dev", "test")
# Share of the question space per split, in percent of the hash buckets 0..99.
_SPLIT_BUCKETS = {"train": range(0, 90), "dev": range(90, 95), "test": range(95, 100)}
STEP_DELIMITER = "\n"
PROMPT_TEMPLATE = "Q:{question}\n"
ANSWER_PREFIX = "A:"  # the toy task's end-of-thinking marker
ALPHABET = "0123456789+-*=QA:\n"  # every character the model reads or writes
_OP_KINDS = ("small", "large", "mul")  # single-digit +/-, two-digit +/-, x2..x9
_MAX_DRAWS = 1000  # draws per operation before the settings are declared impossible


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return `value` if it is a true int (not a bool or float) >= minimum, else BadInputError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInputError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise BadInputError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class TaskConfig:
    """Shape of the problems. The defaults are the task the shipped toy pair was trained on."""

    min_ops: int = 2  # operations per problem, inclusive range
    max_ops: int = 5
    start_min: int = 10  # the start value is drawn from [start_min, start_max]
    start_max: int = 99
    max_value: int = 999  # every intermediate value stays in [0, max_value]

    def __post_init__(self) -> None:
        check_int("min_ops", self.min_ops, minimum=1)
        check_int("max_ops", self.max_ops, minimum=self.min_ops)
        check_int("start_min", self.start_min, minimum=0)
        check_int("start_max", self.start_max, minimum=self.start_min)
        check_int("max_value", self.max_value, minimum=max(self.start_max, 99))


@dataclass(frozen=True)
class Problem:
    """One problem with its reference solution."""

    id: str  # "<split>-<index>", index from 1, e.g. "test-000001"
    question: str  # "59-7*6+74"
    answer: int
    steps: tuple[str, ...]  # ("52=59-7", "312=52*6", "386=312+74")

    def to_json(self) -> str:
        data = asdict(self)
        data["steps"] = list(self.steps)
        return json.dumps(data, separators=(", ", ": "))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Problem:
        try:
            steps, answer = data["steps"], data["answer"]
            if not isinstance(steps, list) or not isinstance(answer, int):
                raise TypeError("steps must be a list and answer an integer")
            return cls(str(data["id"]), str(data["question"]), answer, tuple(str(s) for s in steps))
        except (KeyError, TypeError) as exc:
            raise BadInputError(f"problem record {data!r} is malformed ({exc})") from exc


def prompt_text(question: str) -> str:
    """What the model is given: `Q:<question>` and the step delimiter."""
    return PROMPT_TEMPLATE.format(question=question)


def solution_text(problem: Problem) -> str:
    """What the model must write (without EOS): the steps, one per line, then `A:<answer>`."""
    return STEP_DELIMITER.join([*problem.steps, f"{ANSWER_PREFIX}{problem.answer}"])


def parse_answer(generated: str) -> int | None:
    """The integer after the last `A:` of a generated solution, or None if there is none."""
    head, sep, tail = generated.rpartition(ANSWER_PREFIX)
    digits = tail.strip().split(STEP_DELIMITER)[0]
    if not sep or not digits.isdigit():
        return None
    return int(digits)


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by a hash of its text (so splits never overlap)."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)


def _draw_operation(rng: random.Random, value: int, config: TaskConfig) -> tuple[str, int, int]:
    """One operation (symbol, operand, result) whose result stays in [0, max_value]."""
    for _ in range(_MAX_DRAWS):
        kind = rng.choice(_OP_KINDS)
        if kind == "mul":
            symbol, operand = "*", rng.randint(2, 9)
        else:
            symbol = rng.choice("+-")
            operand = rng.randint(1, 9) if kind == "small" else rng.randint(10, 99)
        result = {"+": value + operand, "-": value - operand, "*": value * operand}[symbol]
        if 0 <= result <= config.max_value:
            return symbol, operand, result
    raise BadInputError(f"no operation keeps {value} within 0..{config.max_value}; raise max_value")


def draw_problem(rng: random.Random, config: TaskConfig, problem_id: str) -> Problem:
    """A random problem from `rng` (any split: callers filter with `split_of`)."""
    value = rng.randint(config.start_min, config.start_max)
    question, steps = str(value), []
    for _ in range(rng.randint(config.min_ops, config.max_ops)):
        symbol, operand, result = _draw_operation(rng, value, config)
        question += f"{symbol}{operand}"
        steps.append(f"{result}={value}{symbol}{operand}")
        value = result
    return Problem(problem_id, question, value, tuple(steps))


def stream_rng(seed: int, *labels: object) -> random.Random:
    """A random stream named by a seed and labels (string seeding is stable across runs)."""
    check_int("seed", seed)
    return random.Random("/".join(map(str, (seed, *labels))))


def problems(split: str, seed: int, config: TaskConfig | None = None) -> Iterator[Problem]:
    """An endless stream of distinct problems of one split, the same for the same seed."""
    if split not in SPLITS:
        raise BadInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    config = config or TaskConfig()
    rng, seen, index = stream_rng(seed, split), set(), 0
    while True:
        problem = draw_problem(rng, config, "")
        if split_of(problem.question) != split or problem.question in seen:
            continue
        seen.add(problem.question)
        index += 1
        yield Problem(f"{split}-{index:06d}", problem.question, problem.answer, problem.steps)


def train_batch(seed: int, step: int, batch_size: int, config: TaskConfig | None = None) -> list[Problem]:
    """The training problems of one optimizer step: fresh every step, a pure function of (seed, step).

    Being a pure function of the step is what makes a resumed run see exactly the batches an
    uninterrupted run would have seen, with no data-loader state to save.
    """
    check_int("step", step, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    config = config or TaskConfig()
    rng, batch = stream_rng(seed, "train", step), list[Problem]()
    while len(batch) < batch_size:
        problem = draw_problem(rng, config, f"train-s{step}-{len(batch)}")
        if split_of(problem.question) == "train":
            batch.append(problem)
    return batch


def take(stream: Iterable[Problem], count: int) -> list[Problem]:
    """The first `count` problems of a stream."""
    return list(itertools.islice(stream, check_int("count", count, minimum=0)))


def write_jsonl(items: Iterable[Problem], path: Path) -> int:
    """Write problems as JSON lines; return how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [problem.to_json() for problem in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def read_jsonl(path: Path) -> list[Problem]:
    """Read problems written by `write_jsonl` (or by hand in the same format)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"problem file {path} does not exist; make one with `glimp toy data`")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Problem.from_dict(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path}:{number} is not valid JSON ({exc})") from exc
    return out
