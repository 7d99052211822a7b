"""Answer checkers: did a run's output give the reference answer?

A checker reads the whole text a system produced after the prompt (reasoning and final answer)
and the reference answer of the problem file. When the model has an end-of-thinking marker
(the toy pair's `A:`), only the text after its last occurrence counts as the answer, so an
intermediate result in the reasoning is never mistaken for the answer.

Pluggable: `make_checker("exact-int" | "exact-text" | "package.module:factory", think_end)`;
a factory is called with the marker (str | None) and returns an object with `name` and
`check(output, expected) -> Verdict`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from glimp_common.errors import BadInputError

_INTEGER = re.compile(r"[-+]?\d+")


@dataclass(frozen=True)
class Verdict:
    """What a checker read as the answer, and whether it matches."""

    predicted: str | None  # None: no answer could be read
    correct: bool


class AnswerChecker(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, output: str, expected: str) -> Verdict:
        """Judge `output` (reasoning + answer text) against the reference `expected`."""
        ...


def answer_part(output: str, think_end: str | None) -> tuple[str, bool]:
    """(the text after the last end-of-thinking marker, whether the marker was found)."""
    if think_end and think_end in output:
        return output.rpartition(think_end)[2], True
    return output, False


@dataclass(frozen=True)
class ExactInt:
    """The answer is an integer equal to the reference (the toy task).

    After the marker: the first integer there. Without a marker in the output: the last
    integer of the whole output (models that end with "... the answer is 42").
    """

    think_end: str | None = None
    name: str = "exact-int"

    def check(self, output: str, expected: str) -> Verdict:
        reference = _as_int(expected)
        tail, marked = answer_part(output, self.think_end)
        found = _INTEGER.findall(tail)
        if not found:
            return Verdict(None, False)
        predicted = int(found[0] if marked else found[-1])
        return Verdict(str(predicted), predicted == reference)


@dataclass(frozen=True)
class ExactText:
    """The first line of the answer, stripped, equals the reference text."""

    think_end: str | None = None
    name: str = "exact-text"

    def check(self, output: str, expected: str) -> Verdict:
        tail, _ = answer_part(output, self.think_end)
        lines = tail.strip().splitlines()
        predicted = lines[0].strip() if lines else None
        return Verdict(predicted, predicted == expected.strip())


def _as_int(expected: str) -> int:
    try:
        return int(expected.strip())
    except ValueError:
        raise BadInputError(
            f"the exact-int checker needs integer reference answers, got {expected!r}; "
            "use --checker exact-text for text answers"
        ) from None


BUILTIN_CHECKERS: dict[str, Callable[[str | None], AnswerChecker]] = {
    "exact-int": lambda marker: ExactInt(marker),
    "exact-text": lambda marker: ExactText(marker),
}


def make_checker(spec: str, think_end: str | None) -> AnswerChecker:
    """A built-in checker by name, or `module:factory` imported and called with `think_end`."""
    if spec in BUILTIN_CHECKERS:
        return BUILTIN_CHECKERS[spec](think_end)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise BadInputError(
            f"unknown checker {spec!r}; use {', '.join(BUILTIN_CHECKERS)} or 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise BadInputError(f"checker {spec!r} could not be imported ({exc})") from exc
    checker = factory(think_end)
    if not callable(getattr(checker, "check", None)):
        raise BadInputError(f"checker factory {spec!r} returned {checker!r}, which has no check() method")
    return checker


def check_references(checker: AnswerChecker, references: list[str]) -> None:
    """Fail before any model work when a reference answer does not suit the checker."""
    for reference in references:
        checker.check("", reference)
