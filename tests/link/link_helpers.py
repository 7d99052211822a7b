"""Helpers of the link tests: real tritonservers on the tiny Qwen3, the edge router, trace checks."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.wire import WireCounter
from cloud_service.launcher import TritonServer, local_server, remove_shm_files
from cloud_service.repository import RepositorySettings
from edge_client import AlwaysCloud, EdgeRouter, RouterConfig, StepSettings
from edge_client.link import (
    CloudLinkConfig,
    ResilienceConfig,
    ResilientConversation,
    ResilientLLM,
    RetryPolicy,
    TritonLLM,
)
from edge_client.llm_backend import LLMConversation, LLMReply, LLMRequest
from edge_client.trace import Event, RunResult, StepFinished
from onnx_lm import CausalLM, ChatMessage

CALL_TIMEOUT_S = 10.0
BREAKER_S = 0.5  # short back-off so the tests see the breaker close in well under a second
DELIMITER = "\n\n"  # the tiny models' step delimiter
THINK_END = "</think>"


def link_server(model_dir: Path, folder: Path, token: str | None, **settings: object) -> TritonServer:
    """An unstarted local server for the link tests (one intra-op thread: two cores are shared)."""
    repository_settings = RepositorySettings(link_model=True, intra_op_threads=1, **settings)  # type: ignore[arg-type]
    return local_server(model_dir, folder, token=token, settings=repository_settings,
                        startup_timeout_s=120.0, stop_timeout_s=10.0)


def sigkill(server: TritonServer) -> None:
    """Kill the server's whole process group at once (server and model stub) and close its gateway
    (which lives in the owning process, e.g. `glimp serve`), as a crash of the serving host does."""
    assert server.pid is not None
    if server.gateway is not None:
        server.gateway.stop(grace_s=0)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(10.0)
    remove_shm_files(server.config.shm_prefix)


def connect(url: str, token: str | None, *, background_sync: bool = False, breaker_s: float = BREAKER_S,
            timeout_s: float = CALL_TIMEOUT_S, gzip: bool = False, offline_ok: bool = False,
            wire: WireCounter | None = None) -> ResilientLLM:
    """The resilient link with short back-offs; `wire` counts every call's bytes when given."""
    link = CloudLinkConfig(url, token, timeout_s=timeout_s, gzip=gzip)
    config = ResilienceConfig(retry=RetryPolicy(max_retries=2, backoff_s=0.05), breaker_s=breaker_s,
                              ping_timeout_s=2.0, background_sync=background_sync, offline_ok=offline_ok)
    counted = wire.link(link) if wire is not None else None
    return ResilientLLM(TritonLLM(link, link=counted), config)


def router_config(budget_tokens: int = 48, max_step_tokens: int = 6) -> RouterConfig:
    """Every step by the cloud, greedy, short steps: a question is a dozen cloud calls."""
    steps = StepSettings(temperature=0.0, max_step_tokens=max_step_tokens, budget_tokens=budget_tokens,
                         answer_max_tokens=8, seed=0)
    return RouterConfig(policy=AlwaysCloud(), steps=steps, answer_by="llm")


class Recording:
    """A backend wrapper that keeps the conversations it opened (to evict one from the side)."""

    def __init__(self, llm: ResilientLLM) -> None:
        self.llm = llm
        self.name = llm.name
        self.provider = llm.provider
        self.opened: list[ResilientConversation] = []

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation:
        conversation = self.llm.open(messages)
        self.opened.append(conversation)
        return conversation

    def close(self) -> None:
        self.llm.close()


class BeforeCall:
    """A backend wrapper whose conversations run `actions[n]` just before their n-th call (1-based)."""

    def __init__(self, llm: ResilientLLM, actions: dict[int, Callable[[], None]]) -> None:
        self.llm = llm
        self.name = llm.name
        self.provider = llm.provider
        self.actions = actions

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation:
        inner = self.llm.open(messages)
        actions, calls = self.actions, [0]

        class Hooked:
            def call(self, request: LLMRequest) -> LLMReply:
                calls[0] += 1
                if calls[0] in actions:
                    actions[calls[0]]()
                return inner.call(request)

            def push(self, transcript: str) -> None:
                inner.push(transcript)

            def close(self) -> None:
                inner.close()

        return Hooked()

    def close(self) -> None:
        self.llm.close()


@dataclass
class StepHook:
    """An `on_event` callback: runs `actions[i]` after step i finishes and times every step."""

    actions: dict[int, Callable[[], None]] = field(default_factory=dict)
    finished_at: dict[int, float] = field(default_factory=dict)  # step index -> time.monotonic()

    def __call__(self, event: Event) -> None:
        if not isinstance(event, StepFinished):
            return
        index = event.record.index
        self.finished_at[index] = time.monotonic()
        if index in self.actions:
            self.actions[index]()


def answer(slm: CausalLM, llm: object, question: str = "hello",
           hook: StepHook | None = None, **config: int) -> RunResult:
    router = EdgeRouter(slm, llm, router_config(**config))  # type: ignore[arg-type]
    return router.answer(question, on_event=hook)


def check_steps_whole(result: RunResult, delimiter: str = DELIMITER, think_end: str = THINK_END) -> None:
    """No step lost or duplicated: indices 0..n-1 once each, and the transcript is exactly the steps,
    the end-of-thinking marker the loop adds, and the answer."""
    assert [s.index for s in result.steps] == list(range(len(result.steps)))
    thinking = delimiter.join(s.text for s in result.steps)
    closing = "" if result.thinking_stop == "think_end" else delimiter + think_end
    assert result.transcript == thinking + closing + result.answer


def in_background(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def outage_lines(records: Sequence[logging.LogRecord]) -> list[str]:
    """What the edge told the user about the cloud coming and going (WARNING and above).

    A context resync after a restart is a line of its own (not about reachability): left out.
    """
    return [r.getMessage().split(":")[0] for r in records
            if r.levelno >= logging.WARNING and r.name.startswith("edge_client")
            and r.name != "edge_client.link.delta"]
