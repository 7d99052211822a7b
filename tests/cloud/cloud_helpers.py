"""Helpers shared by the cloud tests (request builders, shm listing)."""

from __future__ import annotations

import os
import re
import secrets
import urllib.request
from pathlib import Path

from cloud_service.launcher import TritonServer, local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import TLSFiles
from onnx_lm import ChatMessage
from protos import edge_cloud_v1_pb2 as pb

MESSAGES = (ChatMessage("system", "Reason step by step."), ChatMessage("user", "hello"))
CALL_TIMEOUT_S = 30.0


def step_request(context_id: str, client_key: bytes, **fields: object) -> pb.StepRequest:
    """A StepRequest with protocol version 1 and the given fields."""
    return pb.StepRequest(protocol_version=1, context_id=context_id, client_key=client_key, **fields)  # type: ignore[arg-type]


def new_ids() -> tuple[str, bytes]:
    """A fresh (context id, client key)."""
    return secrets.token_hex(16), os.urandom(32)


def shm_files(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{prefix}*"))


def start_server(model_dir: Path, folder: Path, token: str | None, tls: TLSFiles | None = None,
                 **settings: object) -> TritonServer:
    """`model_dir` on a started local server (repository under `folder`, `settings` for it)."""
    repository_settings = RepositorySettings(link_model=True, **settings)  # type: ignore[arg-type]
    server = local_server(model_dir, folder, token=token, settings=repository_settings, tls=tls,
                          startup_timeout_s=120.0)
    server.start()
    return server


def metric(metrics_url: str, name: str, labels: str = "") -> float:
    """Sum of the series of `name` whose labels contain `labels` on a Prometheus page."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = rf"^{name}\{{[^}}]*{labels}[^}}]*\}} (\S+)$"
    values = [float(v) for v in re.findall(pattern, text, flags=re.MULTILINE)]
    assert values, f"{name} {labels} is not on the metrics page"
    return sum(values)
