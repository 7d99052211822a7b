"""The endpoint over the real cloud path: the toy LLM on a real tritonserver, reached over gRPC.

The server is stopped mid-test (the cloud really goes down) and started again on the same port.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from api_helpers import MODEL, TOY_LLM, serve, user

from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client import InProcessLLM
from edge_client.link import CloudLinkConfig, ResilienceConfig, ResilientLLM, RetryPolicy
from onnx_lm import CausalLM

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def glimp(reply: Any) -> dict[str, Any]:
    return (reply.usage.model_extra or {})["glimp"]


def test_cloud_steps_over_grpc_then_down_degraded_then_back(
    pair: tuple[CausalLM, InProcessLLM], tmp_path: Path,
) -> None:
    token = new_token()
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    with local_server(TOY_LLM, tmp_path / "repo", token=token, settings=settings) as cloud:
        port, url = cloud.config.grpc_port, cloud.grpc_url
        link = CloudLinkConfig(url, token=token, timeout_s=10.0)
        llm = ResilientLLM.connect(link, ResilienceConfig(retry=RetryPolicy(max_retries=0), breaker_s=0.2))
        with serve(pair[0], llm) as served:
            client = served.client()
            up = glimp(client.chat.completions.create(model=MODEL, messages=user(), seed=0))
            assert up["steps"]["cloud"] >= 1 and up["answer_writer"] == "cloud" and not up["degraded"]
            assert up["bytes"]["up"] > 0 and up["bytes"]["down"] > 0 and up["cloud_calls"] >= 2
            cloud.stop()  # the cloud goes down for real (stop is idempotent: the with ends it again)

            down = glimp(client.chat.completions.create(model=MODEL, messages=user(), seed=0))
            assert down["degraded"] and down["answer_writer"] == "degraded"

            again = local_server(TOY_LLM, tmp_path / "repo2", token=token, settings=settings, grpc_port=port)
            with again:
                deadline = time.monotonic() + 60  # the breaker's health ping finds the cloud again
                while True:
                    back = glimp(client.chat.completions.create(model=MODEL, messages=user(), seed=0))
                    if not back["degraded"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                assert not back["degraded"] and back["steps"]["cloud"] >= 1
        llm.close()
