"""The Python API examples (edge_client's docstring and the README) run as written.

The examples name the toy pair's folders; here they run on the tiny test models instead.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def local_cloud(llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(gRPC url, edge token) of the tiny LLM on a real local tritonserver."""
    from cloud_service.launcher import local_server
    from cloud_service.repository import RepositorySettings
    from cloud_service.security import new_token

    token = new_token()
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    folder = tmp_path_factory.mktemp("readme_repo")
    with local_server(llm_dir, folder, token=token, settings=settings) as server:
        yield server.grpc_url, token


@pytest.mark.triton
def test_readme_example_runs_against_a_real_cloud(
    slm_dir: Path, llm_dir: Path, local_cloud: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    examples = readme_examples()
    assert len(examples) == 1, "the README shows one edge_client example"
    url, token = local_cloud
    monkeypatch.setenv("GLIMP_EDGE_TOKEN", token)
    namespace = run_example(examples[0].replace("127.0.0.1:8001", url), slm_dir, llm_dir)
    result = namespace["result"]
    assert isinstance(result, edge_client.RunResult)
    # The answer came from the cloud over the resilient link, and the split printed is the trace's.
    assert result.providers["llm"] == f"triton {url}"
    assert result.answer_writer == "cloud" and result.totals.traffic.calls >= 1
    assert result.totals.traffic.bytes_up > 0 and result.totals.traffic.bytes_down > 0
    printed = capsys.readouterr().out
    totals = result.totals
    assert printed.strip() == f"{result.answer} {totals.cloud_steps}/{totals.steps} steps by the LLM".strip()
