"""The SLM worker: requests are queued and run one at a time, each cancellable between tokens.

Why one at a time (queued, not batched): the device holds one ONNX Runtime session of the SLM,
whose intra-op threads already use the cores (two on a small device), and every conversation
has its own KV cache. Two runs at once would share the same cores (each slower, neither sooner)
and hold two KV caches; a batch would need a batched decode the loop does not have. So a single
worker thread runs the loop, and requests wait their turn in FIFO order.

Cancellation is cooperative: the loop calls `on_event` for every token it writes, and the
metered LLM is asked before every cloud call, so a cancelled run stops at the next token or
the next call. The run's own `finally` closes its cloud conversation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from edge_client.api.conversations import ConversationCache
from edge_client.api.errors import GenerationCancelled, cloud_down
from edge_client.api.metering import MeteredLLM
from edge_client.api.metrics import ApiMetrics
from edge_client.api.streaming import answer_as_sent
from edge_client.config import RouterConfig, StepSettings
from edge_client.llm_backend import LLMBackend
from edge_client.loop import EdgeRouter, check_prompt_fits
from edge_client.trace import AnswerStarted, Event, RunResult, StepStarted
from onnx_lm import CausalLM, ChatMessage

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One request's run: what to answer, how, and the flag that stops it."""

    messages: Sequence[ChatMessage]
    steps: StepSettings
    offline_ok: bool
    stop: tuple[str, ...] = ()  # the answer as the client gets it (and resends) ends before these
    on_event: Callable[[Event], None] | None = None  # called on the worker thread
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Finished:
    """A run and the size of its prompt (for usage)."""

    result: RunResult
    prompt_tokens: int
    continued: bool = False  # the turn continued a held conversation (the SLM's and the cloud's context)


class Engine:
    """The SLM, the server's LLM backend and the routing config, behind one worker thread."""

    def __init__(
        self, slm: CausalLM, llm: LLMBackend | None, config: RouterConfig, metrics: ApiMetrics, *,
        max_conversations: int = 4, conversation_idle_s: float = 300.0,
    ) -> None:
        self.slm = slm
        self.llm = llm
        self.config = config
        self.metrics = metrics
        self.delimiter = config.delimiter or slm.manifest.step_delimiter
        self.think_end = slm.manifest.think_end
        self.conversations = ConversationCache(max_conversations, conversation_idle_s, metrics.conversations)
        # One metered backend for every run: a held conversation's cloud context outlives its run.
        self._llm = MeteredLLM(llm, metrics, self._cancelled) if llm is not None else None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glimp-slm")
        self._lock = threading.Condition()
        self.cancelled_total = 0  # runs stopped by a cancel (a client gone, a stalled stream)
        self.finished_total = 0
        self.running = 0  # runs on the worker now (0 or 1: the queue's promise)
        self.peak_running = 0  # the most runs ever at once
        self.peak_waiting = 0  # the most requests ever queued at once
        self._waiting = 0
        self._current: Job | None = None  # the job on the worker, for close() to cancel

    @property
    def cloud(self) -> str:
        """Where the LLM runs, for /health ("none" without one)."""
        return self.llm.provider if self.llm is not None else "none"

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the rendered prompt; BadInputError when it does not fit the SLM's context."""
        return check_prompt_fits(self.slm.tokenizer, messages)

    def submit(self, job: Job) -> Future[Finished]:
        """Queue `job`; the future holds its run, or GenerationCancelled / the error that ended it."""
        self.metrics.queued.inc()
        with self._lock:
            self._waiting += 1
            self.peak_waiting = max(self.peak_waiting, self._waiting)
        return self._worker.submit(self._run, job)

    def wait_cancelled(self, count: int, timeout_s: float) -> bool:
        """Block until `count` runs in all have been cancelled (tests, benchmarks); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self.cancelled_total >= count, timeout_s)

    def close(self) -> None:
        """Stop taking jobs, drop the queued ones, cancel the running one and wait for it to stop."""
        with self._lock:
            if self._current is not None:
                self._current.cancel.set()
        self._worker.shutdown(wait=True, cancel_futures=True)
        self.conversations.clear()

    def _run(self, job: Job) -> Finished:
        self.metrics.queued.dec()
        with self._lock:
            self._waiting -= 1
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            self._current = job
        try:
            return self._run_counted(job)
        finally:
            with self._lock:
                self.running -= 1
                self._current = None

    def _run_counted(self, job: Job) -> Finished:
        try:
            if job.cancel.is_set():
                raise GenerationCancelled("the request was cancelled while it waited")
            prompt_tokens = self.prompt_tokens(job.messages)
            result, continued = self._answer(job)
        except GenerationCancelled:
            with self._lock:
                self.cancelled_total += 1
                self._lock.notify_all()
            self.metrics.requests.labels("cancelled").inc()
            raise
        with self._lock:
            self.finished_total += 1
        return Finished(result, prompt_tokens, continued)

    def _answer(self, job: Job) -> tuple[RunResult, bool]:
        router = EdgeRouter(self.slm, self._llm, replace(self.config, steps=job.steps))
        held = self.conversations.take(job.messages)
        turn = router.turn(job.messages, follows=held, on_event=_Guard(job))
        if turn.continued:
            self.metrics.continued.inc()
        # Held as the client got the reply (and will resend it): cut at its stop strings.
        turn.continuation.answer = answer_as_sent(turn.result.answer, job.stop)[0]
        self.conversations.put(turn.continuation)
        return turn.result, turn.continued

    def _cancelled(self) -> bool:
        """Whether the run on the worker now has been cancelled (asked before each cloud call)."""
        current = self._current
        return current is not None and current.cancel.is_set()


class _Guard:
    """The run's `on_event`: stops it when cancelled, or at a degraded part nobody accepted."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, event: Event) -> None:
        if self.job.cancel.is_set():
            raise GenerationCancelled("the client went away")
        if not self.job.offline_ok and _degraded(event):
            raise cloud_down("a step or the answer had to be written without it")
        if self.job.on_event is not None:
            self.job.on_event(event)


def _degraded(event: Event) -> bool:
    return isinstance(event, StepStarted | AnswerStarted) and event.writer == "degraded"
