"""The Python API examples (edge_client's docstring and the README) run as written.

The examples name the toy pair's folders; here they run on the tiny test models instead.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

import edge_client

README = Path(__file__).resolve().parents[2] / "README.md"


def docstring_example() -> str:
    """The indented block after the docstring's `::`, up to the next unindented line."""
    lines = (edge_client.__doc__ or "").split("::\n", 1)[1].splitlines()
    block = []
    for line in lines:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def readme_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [block for block in blocks if "from edge_client import" in block]


def run_example(code: str, slm_dir: Path, llm_dir: Path) -> dict[str, object]:
    code = code.replace("models/toy-pair/slm", str(slm_dir)).replace("models/toy-pair/llm", str(llm_dir))
    namespace: dict[str, object] = {}
    exec(compile(code, "example", "exec"), namespace)  # noqa: S102 - running documentation as a test
    return namespace


def test_docstring_example_runs(slm_dir: Path, llm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_example(docstring_example(), slm_dir, llm_dir)
    result = namespace["result"]
    assert isinstance(result, edge_client.RunResult)
    assert f"/{result.totals.steps} steps by the LLM" in capsys.readouterr().out
    assert '"steps"' in str(namespace["trace_json"])


def test_readme_examples_run(slm_dir: Path, llm_dir: Path) -> None:
    examples = readme_examples()
    if not examples:
        pytest.skip("the README shows no edge_client example yet")
    for code in examples:
        namespace = run_example(code, slm_dir, llm_dir)
        assert any(isinstance(value, edge_client.RunResult) for value in namespace.values())
