"""glimp_common.env: one boolean rule for every environment twin, typed readers naming bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimp_common.env import env_flag, env_float, env_int, env_path, env_str
from glimp_common.errors import BadInputError

VAR = "GLIMP_TEST_ENV_TWIN"


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE", "Yes", " On "])
def test_true_words_are_true(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_flag(VAR) is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "", "FALSE", "No", "OFF"])
def test_false_words_are_false(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, value)
    assert env_flag(VAR, default=True) is False


def test_an_unset_flag_takes_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VAR, raising=False)
    assert env_flag(VAR) is False and env_flag(VAR, True) is True


@pytest.mark.parametrize("value", ["2", "y", "enabled", "maybe"])
def test_any_other_flag_value_is_an_error_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VAR, value)
    with pytest.raises(BadInputError, match=VAR):
        env_flag(VAR)


def test_typed_readers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, "42")
    assert env_int(VAR, 1) == 42 and env_float(VAR, 1.0) == 42.0 and env_str(VAR) == "42"
    assert env_path(VAR) == Path("42")
    monkeypatch.setenv(VAR, "")  # empty counts as unset
    assert env_int(VAR, 7) == 7 and env_str(VAR, "d") == "d" and env_path(VAR) is None
    monkeypatch.delenv(VAR)
    assert env_int(VAR) is None and env_float(VAR, 0.5) == 0.5 and env_path(VAR, "x") == Path("x")


@pytest.mark.parametrize("reader", [env_int, env_float])
def test_a_bad_number_is_an_error_naming_the_variable(reader, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(VAR, "twelve")
    with pytest.raises(BadInputError, match=VAR):
        reader(VAR, 1)


def test_the_bottom_package_imports_nothing_outside_the_standard_library() -> None:
    import ast
    import sys

    root = Path(__file__).resolve().parents[2] / "glimp_common"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    allowed = top in sys.stdlib_module_names or top in ("__future__", "glimp_common")
                    assert allowed, (path, name)
