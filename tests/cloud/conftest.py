"""Fixtures of the cloud tests: real tritonserver processes on the tiny Qwen3, and request helpers.

Every server runs through `cloud_service.launcher.TritonServer` (the class `glimp serve` uses),
on free ports, with a random edge token; the context manager stops it and removes its
shared-memory files even when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import CALL_TIMEOUT_S, start_server

from cloud_service.launcher import TritonServer
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLink, TritonLLM


@pytest.fixture(scope="session")
def cloud_token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def triton_server(
    tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory, cloud_token: str
) -> Iterator[TritonServer]:
    """The tiny Qwen3 on a real tritonserver with a 2 GiB context cache and a random token."""
    server = start_server(tiny_qwen3_dir, tmp_path_factory.mktemp("repo"), cloud_token)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def llm(triton_server: TritonServer, cloud_token: str) -> Iterator[TritonLLM]:
    """A fresh client (its own credential) of the shared server."""
    with TritonLLM(CloudLinkConfig(triton_server.grpc_url, cloud_token, timeout_s=CALL_TIMEOUT_S)) as client:
        yield client


@pytest.fixture()
def link(triton_server: TritonServer, cloud_token: str) -> Iterator[TritonLink]:
    """A raw link, for hand-made StepRequests."""
    raw = TritonLink(CloudLinkConfig(triton_server.grpc_url, cloud_token, timeout_s=CALL_TIMEOUT_S))
    yield raw
    raw.close()


@pytest.fixture()
def own_server(tiny_qwen3_dir: Path, tmp_path: Path) -> Iterator[tuple[TritonServer, str]]:
    """A server of this test alone, with its own token (the test may kill or flood it)."""
    token = new_token()
    server = start_server(tiny_qwen3_dir, tmp_path, token)
    try:
        yield server, token
    finally:
        server.stop()
