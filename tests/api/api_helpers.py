"""Helpers of the API tests: the toy pair behind a real uvicorn server, and a cloud that can go down.

`FlakyLLM` wraps the real in-process LLM and raises CloudUnavailableError while `down` is set:
the one fault these tests fake (a dead network cannot be made in process; the Triton test makes
it real).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

from edge_client import EntropyThreshold, InProcessLLM, RouterConfig, StepSettings
from edge_client.api.app import create_app
from edge_client.api.engine import Engine
from edge_client.api.metrics import ApiMetrics
from edge_client.api.server import ThreadedServer
from edge_client.api.settings import ApiSettings
from edge_client.errors import CloudUnavailableError
from edge_client.llm_backend import LLMBackend, LLMConversation, LLMReply, LLMRequest
from onnx_lm import CausalLM, ChatMessage, SessionConfig

ROOT = Path(__file__).resolve().parents[2]
TOY_SLM = ROOT / "models" / "toy-pair" / "slm"
TOY_LLM = ROOT / "models" / "toy-pair" / "llm"
CPU = SessionConfig(providers="cpu", intra_op_threads=1)
QUESTION = "12+7*3-5"
MODEL = "glimprouter"
# tau 0.2 sends the toy's uncertain first step to the cloud and keeps the rest on the edge.
CONFIG = RouterConfig(policy=EntropyThreshold(0.2), steps=StepSettings(seed=0))


class FlakyLLM:
    """A real LLM backend whose every call fails as unreachable while `down` is set."""

    def __init__(self, inner: LLMBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = threading.Event()

    @property
    def provider(self) -> str:
        return self.inner.provider

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation:
        return _FlakyConversation(self.inner.open(messages), self.down)

    def close(self) -> None:
        self.inner.close()


@dataclass
class _FlakyConversation:
    inner: LLMConversation
    down: threading.Event

    def call(self, request: LLMRequest) -> LLMReply:
        if self.down.is_set():
            raise CloudUnavailableError("the test cut the link")
        return self.inner.call(request)

    def push(self, transcript: str) -> None:
        self.inner.push(transcript)

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        self.inner.next_turn(answer, messages)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Served:
    """A running server and what a test needs to look inside it."""

    url: str
    engine: Engine
    llm: FlakyLLM | None

    def client(self, api_key: str = "unused", **kwargs: object) -> OpenAI:
        # No retries: a test sees each status as the server sent it.
        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def serve(slm: CausalLM, llm: LLMBackend | None, config: RouterConfig = CONFIG,
          settings: ApiSettings | None = None, max_conversations: int = 4) -> Iterator[Served]:
    """The app on a free loopback port, on its own thread, for the block's duration."""
    flaky = FlakyLLM(llm) if llm is not None else None
    engine = Engine(slm, flaky, config, ApiMetrics(), max_conversations=max_conversations)
    try:
        with ThreadedServer(create_app(engine, settings or ApiSettings())) as server:
            yield Served(server.url, engine, flaky)
    finally:
        engine.close()


def load_pair() -> tuple[CausalLM, InProcessLLM]:
    return CausalLM.load(TOY_SLM, CPU), InProcessLLM.load(TOY_LLM, CPU)


def user(text: str = QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
