"""One real tritonserver with the vLLM engine per test session (tests marked `vllm`).

Skips when the cloud venv (.venv-cloud, `bash cloud_service/vllm/setup_env.sh`) is absent. The
server runs the cloud venv's tritonserver and Python; the tests themselves run in whichever
environment pytest runs in (they only speak gRPC). GLIMP_CLOUD_VENV points elsewhere.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLOUD_VENV = Path(os.environ.get("GLIMP_CLOUD_VENV", REPO / ".venv-cloud"))
TOY_LLM_HF = REPO / "models" / "toy-pair" / "llm-hf"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm: starts tritonserver with the vLLM engine (needs .venv-cloud)")


def cloud_venv_missing() -> str | None:
    if not (CLOUD_VENV / "bin" / "python3").exists():
        return f"no cloud venv at {CLOUD_VENV}: bash cloud_service/vllm/setup_env.sh"
    if not (CLOUD_VENV / ".installed-stamp").exists():
        return f"the cloud venv at {CLOUD_VENV} is incomplete: rerun bash cloud_service/vllm/setup_env.sh"
    return None


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    reason = cloud_venv_missing()
    if reason:
        pytest.skip(reason)
    from cloud_service.vllm.repository import VllmSettings, build_repository
    from cloud_service.vllm.server import VllmServerConfig, VllmTritonServer

    base = tmp_path_factory.mktemp("vllm_repo")
    repository = build_repository(TOY_LLM_HF, base / "repository",
                                  VllmSettings(prompt_template="Q:{question}\n", kv_cache_bytes=1 << 30))
    server = VllmTritonServer(VllmServerConfig(repository=repository, venv=CLOUD_VENV, exit_timeout_s=5,
                                               log_file=base / "tritonserver.log"))
    try:
        server.start()
        yield server
    finally:
        server.stop(signal.SIGTERM, 10)
        server.cleanup()
