"""The Qwen3 SLM + Llama 3 LLM pair once through a real tritonserver over gRPC."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_realtok_pairs import CPU, QUESTION, SETTINGS, CloudAt, streamed

from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client import EdgeRouter, RouterConfig
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.trace import Event

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_qwen3_slm_with_llama3_llm_through_triton(qwen3_dir: Path, llama3_dir: Path, tmp_path: Path) -> None:
    token = new_token()
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    events: list[Event] = []
    with local_server(llama3_dir, tmp_path / "repo", token=token, settings=settings) as server, \
            TritonLLM(CloudLinkConfig(server.grpc_url, token, timeout_s=60.0)) as cloud:
        router = EdgeRouter.from_folders(qwen3_dir, cloud, RouterConfig(CloudAt(), SETTINGS), CPU)
        result = router.answer(QUESTION, on_event=events.append)
    assert [(s.writer, s.text) for s in result.steps] == [
        ("edge", "First step."), ("cloud", "Then more:"), ("edge", "</think>")]
    assert (result.answer_writer, result.answer, result.thinking_stop) == ("cloud", "42", "think_end")
    traffic = result.totals.traffic
    assert traffic.calls >= 2 and traffic.bytes_up > 0
    assert traffic.resync_bytes_up == 0  # the cloud never had to be sent the whole transcript again
    step_texts, answer_text = streamed(events)
    assert step_texts == [s.text for s in result.steps] and answer_text == "42"
