"""What the endpoint figures share: the toy pair on a real tritonserver, the endpoint on a free port."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client import RouterConfig
from edge_client.api.app import create_app
from edge_client.api.engine import Engine
from edge_client.api.metrics import ApiMetrics
from edge_client.api.server import ThreadedServer
from edge_client.api.settings import ApiSettings
from edge_client.link import CloudLinkConfig, ResilienceConfig, ResilientLLM
from onnx_lm import CausalLM, SessionConfig

ROOT = Path(__file__).resolve().parents[2]
TOY_SLM = ROOT / "models" / "toy-pair" / "slm"
TOY_LLM = ROOT / "models" / "toy-pair" / "llm"
CPU = SessionConfig(providers="cpu", intra_op_threads=1)
MODEL = "glimprouter"


@dataclass
class Cloud:
    """A running tritonserver serving an LLM folder, and the edge link to it."""

    url: str
    token: str
    llm: ResilientLLM


@contextlib.contextmanager
def triton_cloud(llm_dir: Path) -> Iterator[Cloud]:
    """`llm_dir` on a real tritonserver (free ports, its own shm prefix), stopped at the end."""
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="glimp-bench-api-") as work, \
            local_server(llm_dir, Path(work) / "repo", token=token,
                         settings=RepositorySettings(link_model=True, intra_op_threads=1)) as server:
        llm = ResilientLLM.connect(CloudLinkConfig(server.grpc_url, token=token, timeout_s=60.0),
                                   ResilienceConfig())
        try:
            yield Cloud(server.grpc_url, token, llm)
        finally:
            llm.close()


@contextlib.contextmanager
def endpoint(slm: CausalLM, llm: ResilientLLM | None, config: RouterConfig, *,
             max_conversations: int = 4) -> Iterator[tuple[str, Engine]]:
    """The endpoint on a free loopback port: its base URL and engine."""
    engine = Engine(slm, llm, config, ApiMetrics(), max_conversations=max_conversations)
    try:
        with ThreadedServer(create_app(engine, ApiSettings(model_id=MODEL))) as server:
            yield f"{server.url}/v1", engine
    finally:
        engine.close()


def client(base_url: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)
