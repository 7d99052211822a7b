"""`python -m bench.hardening.flood_run MODEL_DIR --requests 10000`: the malformed-request flood, for real.

Starts MODEL_DIR on a real tritonserver (behind the launcher's gateway), runs a greedy session
alone, then floods the server with every family of `bench.hardening.flood` while the same
session runs again beside it. Prints (and with --json writes) the answers by family and status,
whether the server process is still the one started (0 crashes), and whether the session's
text is byte-identical to its run without the flood.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.hardening.flood import FloodResult, flood
from cloud_service.launcher import TritonServer, local_server
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage

SESSION = (ChatMessage("system", "Reason step by step."), ChatMessage("user", "Add 12 and 30."))
SESSION_STEPS = 6


@dataclass(frozen=True)
class FloodReport:
    """The figures of one flood run."""

    requests: int
    statuses: dict[str, int]
    by_family: dict[str, dict[str, int]]
    server_crashes: int  # the server process changed or died during the flood
    session_identical: bool  # the concurrent greedy session matched its run alone
    session_steps: int
    gateway_refused: int


def greedy_session(url: str, token: str, steps: int = SESSION_STEPS) -> list[str]:
    """The texts of `steps` greedy reasoning steps of one conversation."""
    texts: list[str] = []
    with TritonLLM(CloudLinkConfig(url, token, timeout_s=60.0)) as llm:
        conversation = llm.open(SESSION)
        transcript = ""
        for _ in range(steps):
            reply = conversation.call(LLMRequest(LLMAction.WRITE_STEP, transcript, GREEDY, max_tokens=16))
            texts.append(reply.text)
            transcript += reply.text + "\n\n"
        conversation.close()
    return texts


def flood_check(server: TritonServer, token: str, requests: int) -> FloodReport:
    """Session alone, then flood + session together, on a started `server`."""
    alone = greedy_session(server.grpc_url, token)
    pid = server.pid
    during: list[list[str]] = []
    session = threading.Thread(target=lambda: during.append(greedy_session(server.grpc_url, token)))
    session.start()
    result: FloodResult = flood(server.grpc_url, token, requests)
    session.join()
    server.check_ready()  # raises if the server stopped answering
    crashes = 0 if server.is_running() and server.pid == pid else 1
    gateway = server.gateway
    return FloodReport(
        requests=result.sent, statuses=dict(result.statuses),
        by_family={k: dict(v) for k, v in sorted(result.by_family.items())},
        server_crashes=crashes, session_identical=bool(during) and during[0] == alone,
        session_steps=len(alone), gateway_refused=gateway.refused if gateway else 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="glimp_flood_") as work, \
            local_server(args.model_dir, work, token=token) as server:
        report = flood_check(server, token, args.requests)
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if report.server_crashes == 0 and report.session_identical else 1


if __name__ == "__main__":
    sys.exit(main())
