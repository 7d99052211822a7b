"""Environment twins of command-line flags: one reader per type, one rule for booleans.

Every flag's default comes from a `GLIMP_*` variable read through these functions, so a CI job's
environment and a command line mean the same thing. An empty variable counts as unset, except
for `env_flag`, where "" is false.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, overload

from glimp_common.errors import BadInputError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")

T = TypeVar("T")


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...


def env_str(name: str, default: str | None = None) -> str | None:
    """The variable's value, or `default` when it is unset or empty."""
    value = os.environ.get(name)
    return value if value else default


def env_flag(name: str, default: bool = False) -> bool:
    """A boolean variable: 1/true/yes/on is true, 0/false/no/off or empty is false (any case).

    Unset gives `default`. Raises BadInputError naming the variable for any other value.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadInputError(f"{name}={value!r} is not a boolean; use one of {', '.join(TRUE_WORDS)} "
                        f"or {', '.join(w for w in FALSE_WORDS if w)}")


@overload
def env_int(name: str, default: int) -> int: ...
@overload
def env_int(name: str, default: None = None) -> int | None: ...
def env_int(name: str, default: int | None = None) -> int | None:
    """An integer variable, or `default` when unset or empty; BadInputError names a bad value."""
    return _parsed(name, default, int, "an integer")


@overload
def env_float(name: str, default: float) -> float: ...
@overload
def env_float(name: str, default: None = None) -> float | None: ...
def env_float(name: str, default: float | None = None) -> float | None:
    """A number variable, or `default` when unset or empty; BadInputError names a bad value."""
    return _parsed(name, default, float, "a number")


def env_path(name: str, default: Path | str | None = None) -> Path | None:
    """A path variable, or `default` (as a Path) when unset or empty."""
    value = env_str(name)
    if value is not None:
        return Path(value)
    return Path(default) if default is not None else None


def _parsed(name: str, default: T | None, kind: Callable[[str], T], what: str) -> T | None:
    value = env_str(name)
    if value is None:
        return default
    try:
        return kind(value.strip())
    except ValueError:
        raise BadInputError(f"{name}={value!r} is not {what}") from None


def unescaped(text: str | None) -> str | None:
    """A flag's text with a typed backslash-n / backslash-t as a newline / tab (a shell passes them
    literally, and prompt templates and step delimiters need them)."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")
