"""The LLM as the endpoint's runs see it: the server's backend, checked for cancellation, timed per call.

The step loop only reaches the cloud through `LLMBackend.open` and `LLMConversation.call`, so
this is where a cancelled request stops before its next cloud call (a call in flight ends at
its own deadline, `--llm-timeout-s`), and where each call's round trip is observed. One wrapper
serves every run: a conversation held for a later turn asks `is_cancelled` about the run that
uses it now (the worker runs one at a time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edge_client.api.errors import GenerationCancelled
from edge_client.api.metrics import ApiMetrics
from edge_client.errors import CloudUnavailableError
from edge_client.llm_backend import LLMBackend, LLMConversation, LLMReply, LLMRequest
from onnx_lm import ChatMessage


class MeteredLLM:
    """`backend`, refusing new calls while `is_cancelled()`; counts calls and open conversations."""

    def __init__(self, backend: LLMBackend, metrics: ApiMetrics, is_cancelled: Callable[[], bool]) -> None:
        self.backend = backend
        self.metrics = metrics
        self.is_cancelled = is_cancelled
        self.name = backend.name

    @property
    def provider(self) -> str:
        return self.backend.provider

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation:
        self._check()
        conversation = MeteredConversation(self.backend.open(messages), self)
        self.metrics.cloud_conversations.inc()
        return conversation

    def close(self) -> None:
        """The server owns the backend: one run's end does not close it."""

    def _check(self) -> None:
        if self.is_cancelled():
            raise GenerationCancelled("the request was cancelled before a cloud call")


class MeteredConversation:
    def __init__(self, inner: LLMConversation, owner: MeteredLLM) -> None:
        self.inner = inner
        self.owner = owner
        self.closed = False

    def call(self, request: LLMRequest) -> LLMReply:
        self.owner._check()
        histogram = self.owner.metrics.cloud_call
        started = time.perf_counter()
        try:
            reply = self.inner.call(request)
        except CloudUnavailableError:
            histogram.labels("unavailable").observe(time.perf_counter() - started)
            raise
        histogram.labels("ok").observe(time.perf_counter() - started)
        return reply

    def push(self, transcript: str) -> None:
        if not self.owner.is_cancelled():
            self.inner.push(transcript)

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        self.inner.next_turn(answer, messages)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.metrics.cloud_conversations.dec()
            self.inner.close()
