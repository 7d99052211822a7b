"""Problem files of the benchmark: JSON lines of `{"id", "question", "answer"}`.

The toy task generator writes this format (with extra fields, such as the reference steps,
which are ignored); any file in it works, not only the shipped one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from glimp_common.errors import BadInputError


@dataclass(frozen=True)
class BenchProblem:
    """One problem: what is asked and the reference answer (kept as text, checkers parse it)."""

    id: str
    question: str
    answer: str

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise BadInputError(f"problem {self.id!r} has an empty question")


def _record(line: str, where: str) -> BenchProblem:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"{where} is not a JSON object")
    missing = [key for key in ("id", "question", "answer") if key not in data]
    if missing:
        raise BadInputError(f"{where} has no {', '.join(missing)}; each line needs id, question and answer")
    answer = data["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int | float | str):
        raise BadInputError(f"{where}: the answer must be a number or a string, got {answer!r}")
    if not isinstance(data["question"], str):
        raise BadInputError(f"{where}: the question must be a string, got {data['question']!r}")
    return BenchProblem(str(data["id"]), data["question"], str(answer))


def read_problems(path: Path | str, limit: int | None = None) -> list[BenchProblem]:
    """The first `limit` problems of a JSONL file (all when None).

    Raises BadInputError for a missing file, a malformed line, duplicate ids or no problems.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"problem file {path} does not exist (make one with `glimp toy data`)")
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be >= 1, got {limit}")
    problems: list[BenchProblem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            problems.append(_record(line, f"{path}:{number}"))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise BadInputError(f"{path} holds no problems")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise BadInputError(f"{path}: problem id {duplicate!r} appears more than once; ids must be unique")
    return problems
