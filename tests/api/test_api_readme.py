"""The README's app example runs as written against a real server (the toy pair, the LLM in process)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from api_helpers import Served

README = Path(__file__).resolve().parents[2] / "README.md"


def app_examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [block for block in blocks if "from openai import" in block]


def test_the_readme_app_example_runs(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    examples = app_examples()
    assert len(examples) == 1, "the README shows one app example"
    code = examples[0].replace("http://127.0.0.1:8080", served.url)
    namespace: dict[str, object] = {}
    exec(compile(code, "README app example", "exec"), namespace)  # noqa: S102 - documentation as a test
    reply = namespace["reply"]
    out = capsys.readouterr().out
    answer = reply.choices[0].message.content  # type: ignore[attr-defined]
    assert out.startswith(f"{answer} {{'edge': ")  # the answer, then the steps by writer
    reasoning = reply.choices[0].message.reasoning_content  # type: ignore[attr-defined]
    assert out.rstrip().endswith(reasoning + answer)  # the stream: the same reasoning, then the answer
