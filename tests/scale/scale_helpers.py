"""Helpers of the scale tests: the nginx skip, a fleet on the tiny model, sessions, holder probes.

`holders` asks every replica directly (not through the balancer) whether it holds a context at
the state the edge believes in: a SCORE call commits nothing, and a replica without the context
answers a mismatch. That is the servers' own account of where each context lives.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloud_service.balancer.fleet import FleetConfig, LocalFleet
from cloud_service.balancer.nginx import NGINX_INSTALL_HINT
from cloud_service.launcher import TritonServer, remove_shm_files
from cloud_service.repository import RepositorySettings
from edge_client.link import (
    CloudLinkConfig,
    ResilienceConfig,
    ResilientConversation,
    ResilientLLM,
    RetryPolicy,
    TritonLLM,
)
from edge_client.link.transport import TritonLink
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import PROTOCOL_VERSION, TranscriptDigest, transcript_state

needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None and not os.path.isfile("/usr/sbin/nginx"),
    reason=f"nginx is not installed ({NGINX_INSTALL_HINT}); .ci/run installs it",
)
CALL_TIMEOUT_S = 30.0
STEP_TOKENS = 3  # short steps: the test is about routing, not decoding


def tiny_fleet(model_dir: Path, work_dir: Path, token: str | None, replicas: int = 3,
               **config: object) -> LocalFleet:
    """An unstarted fleet of the tiny model (one ONNX Runtime thread each: the cores are shared)."""
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    return LocalFleet(model_dir, work_dir, FleetConfig(replicas, token, settings=settings, **config),  # type: ignore[arg-type]
                      startup_timeout_s=120.0, stop_timeout_s=10.0)


def sigkill(server: TritonServer) -> None:
    """Kill the replica's whole process group at once (server and model stub) and close its gateway
    (which lives in the owning process), as a crash of the replica's host does."""
    assert server.pid is not None
    if server.gateway is not None:
        server.gateway.stop(grace_s=0)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(10.0)
    remove_shm_files(server.config.shm_prefix)


def resilient(url: str, token: str | None) -> ResilientLLM:
    """The edge's link as the loop uses it: bounded retries on UNAVAILABLE, breaker, one full resend."""
    config = ResilienceConfig(retry=RetryPolicy(max_retries=3, backoff_s=0.05), breaker_s=0.5,
                              ping_timeout_s=2.0)
    return ResilientLLM(TritonLLM(CloudLinkConfig(url, token, timeout_s=CALL_TIMEOUT_S)), config)


@dataclass
class Session:
    """One conversation and what its steps cost: resends counted per phase."""

    llm: ResilientLLM
    conversation: ResilientConversation
    messages: tuple[ChatMessage, ...]
    transcript: str = ""
    held_text: str = ""  # what the server holds after the last step: the transcript sent + the reply
    steps: int = 0
    resyncs: Counter[str] = field(default_factory=Counter)  # phase -> full resends
    errors: list[str] = field(default_factory=list)

    def step(self, phase: str) -> None:
        request = LLMRequest(LLMAction.WRITE_STEP, self.transcript, GREEDY, max_tokens=STEP_TOKENS)
        reply = self.conversation.call(request)
        self.held_text = self.transcript + reply.text
        self.transcript = self.held_text + "\n\n"
        self.steps += 1
        self.resyncs[phase] += int(reply.cost.resynced)


def run_phase(sessions: Sequence[Session], phase: str, steps: int,
              after_first_step: Callable[[], None] | None = None) -> None:
    """Every session takes `steps` steps on its own thread; `after_first_step` runs once all took one."""
    all_stepped = threading.Barrier(len(sessions), action=after_first_step)

    def work(session: Session) -> None:
        try:
            for i in range(steps):
                session.step(phase)
                if i == 0:
                    all_stepped.wait(120.0)
        except Exception as exc:  # collected, asserted by the test
            session.errors.append(f"{type(exc).__name__}: {exc}")
            all_stepped.abort()

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300.0)


def holders(fleet: LocalFleet, sessions: Sequence[Session], token: str | None) -> dict[str, set[int]]:
    """context id -> the replicas that hold it at the state the edge believes in (asked directly)."""
    found: dict[str, set[int]] = {s.conversation.context_id: set() for s in sessions}
    for index, server in enumerate(fleet.replicas):
        if not server.is_running():
            continue
        link = TritonLink(CloudLinkConfig(server.grpc_url, token, timeout_s=CALL_TIMEOUT_S))
        try:
            for session in sessions:
                if _holds(link, session):
                    found[session.conversation.context_id].add(index)
        finally:
            link.close()
    return found


def _holds(link: TritonLink, session: Session) -> bool:
    conversation = session.conversation
    digest = TranscriptDigest([(m.role, m.content) for m in session.messages])
    digest.extend(session.held_text)
    view = digest.view()
    probe = pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=conversation.context_id,
                           client_key=conversation.client_key, action=pb.SCORE,
                           new_text="x", score_bytes=1)
    probe.base.CopyFrom(transcript_state(view, PROTOCOL_VERSION))
    return link.exchange(probe).reply.WhichOneof("outcome") == "result"


def open_sessions(url: str, token: str | None, count: int) -> list[Session]:
    """`count` edges, each with its own resilient link (and breaker) and one conversation."""
    sessions = []
    for i in range(count):
        messages = (ChatMessage("user", f"Q:{i}+{i * 7 % 10}"),)
        llm = resilient(url, token)
        sessions.append(Session(llm, llm.open(list(messages)), messages))
    return sessions


def close_sessions(sessions: Sequence[Session]) -> None:
    for session in sessions:
        session.llm.close()
