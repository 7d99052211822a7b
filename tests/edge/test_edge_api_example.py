"""The Python API examples (edge_client's docstring and the README) run as written.

The examples name the toy pair's folders; here they run on the tiny test models instead.
"""

from __future__ import annotations

import json
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
    router = namespace["router"]
    assert isinstance(router, edge_client.EdgeRouter)
    tau = router.config.policy.tau  # type: ignore[attr-defined]
    # The split is the policy's: a step goes to the LLM exactly when its probe's entropy >= tau.
    assert result.steps and all((s.writer == "cloud") == (s.entropy_nats >= tau) for s in result.steps)
    totals = result.totals
    assert totals.cloud_steps == sum(s.writer == "cloud" for s in result.steps)
    assert result.answer_writer == "cloud" and result.answer and result.transcript.endswith(result.answer)
    printed = capsys.readouterr().out
    assert printed == f"{result.answer} {totals.cloud_steps}/{totals.steps} steps by the LLM\n"
    trace = json.loads(str(namespace["trace_json"]))
    assert [s["writer"] for s in trace["steps"]] == [s.writer for s in result.steps]
    assert trace["answer"] == result.answer


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
    printed = capsys.readouterr().out
    # The same router in process (greedy, one seed) writes the same steps and answer: the cloud
    # path changed nothing but where the LLM ran.
    router = namespace["router"]
    assert isinstance(router, edge_client.EdgeRouter)
    in_process = edge_client.EdgeRouter.from_folders(
        slm_dir, llm=edge_client.InProcessLLM.load(llm_dir), config=router.config).answer(result.question)
    assert result.answer == in_process.answer and result.transcript == in_process.transcript
    assert [s.writer for s in result.steps] == [s.writer for s in in_process.steps]
    assert result.providers["llm"] == f"triton {url}" and result.answer_writer == "cloud"
    totals = result.totals
    assert printed == f"{result.answer} {totals.cloud_steps}/{totals.steps} steps by the LLM\n"
    # Bytes: one call per cloud step and one for the answer, nothing for the SLM's steps; each
    # reply carries at least the text it brought; the totals are the records' sum.
    records = [*result.steps, result.answer_record]
    cloud = [r for r in records if r.writer == "cloud"]
    assert totals.traffic.calls == len(cloud) == totals.cloud_steps + 1
    assert all(r.traffic.bytes_up == 0 for r in result.steps if r.writer == "edge")
    assert all(r.traffic.calls == 1 and r.traffic.bytes_down > len(r.text.encode()) for r in cloud)
    assert totals.traffic.bytes_up == sum(r.traffic.bytes_up for r in records)
    assert totals.traffic.resync_bytes_up == 0
