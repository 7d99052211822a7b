"""Fixtures of the link tests: the tiny Qwen3 as both SLM (in process) and LLM (on real tritonservers).

Servers start through `cloud_service.launcher.TritonServer` with a random edge token; every
fixture stops its servers and removes their shared-memory files, also when a test fails.
Tests that kill or restart a server start their own; the others share one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from link_helpers import link_server

from cloud_service.launcher import TritonServer
from cloud_service.security import new_token
from onnx_lm import CausalLM, SessionConfig


@pytest.fixture(scope="session")
def link_token() -> str:
    return new_token()


@pytest.fixture(scope="session")
def shared_server(
    tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory, link_token: str
) -> Iterator[TritonServer]:
    """One server for the tests that do not kill or restart it."""
    with link_server(tiny_qwen3_dir, tmp_path_factory.mktemp("link_repo"), link_token) as server:
        yield server


@pytest.fixture()
def own_server(tiny_qwen3_dir: Path, tmp_path: Path, link_token: str) -> Iterator[TritonServer]:
    """A server of this test alone (it may be killed); stopped and cleaned up afterwards."""
    server = link_server(tiny_qwen3_dir, tmp_path / "repo", link_token)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slm(tiny_qwen3_dir: Path) -> CausalLM:
    return CausalLM.load(tiny_qwen3_dir, SessionConfig(providers="cpu", intra_op_threads=1))
