"""The sessions of the scale-out benchmark: toy problems, one step per call, costs per call.

Each session is one edge device: its own resilient link (retries, breaker) and a link that
records what the server reports per call (reused KV tokens, prefilled tokens). A session
answers its problems one after another, one conversation per problem, one WRITE_STEP per line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge_client.link import CloudLinkConfig, ResilienceConfig, ResilientLLM, RetryPolicy, TritonLLM
from edge_client.link.transport import Exchange, PieceSink, TritonLink
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage
from protos import edge_cloud_v1_pb2 as pb

STEP_DELIMITER = "\n"  # the toy pair's
MAX_STEP_TOKENS = 16


@dataclass(frozen=True)
class CallRecord:
    """One step as the edge saw it (the resend, when there was one, folded in)."""

    session: int
    context_id: str
    started_s: float  # since the run started
    ended_epoch_s: float  # time.time() at the reply, to order calls against nginx's log and the kill
    round_trip_s: float
    bytes_up: int
    reused_tokens: int  # server-reported, every exchange of the call
    prefill_tokens: int
    resynced: bool


@dataclass(frozen=True)
class QuestionRecord:
    session: int
    seconds: float
    completed: bool
    error: str = ""


class RecordingLink(TritonLink):
    """A TritonLink that keeps the server's token counts of every exchange (one session: no lock)."""

    def __init__(self, config: CloudLinkConfig) -> None:
        super().__init__(config)
        self.reused_tokens = 0
        self.prefill_tokens = 0

    def exchange(self, request: pb.StepRequest, timeout_s: float | None = None,
                 on_piece: PieceSink | None = None) -> Exchange:
        done = super().exchange(request, timeout_s, on_piece)
        if done.reply.WhichOneof("outcome") == "result":
            self.reused_tokens += done.reply.result.timings.reused_tokens
            self.prefill_tokens += done.reply.result.timings.prefill_tokens
        return done


def load_problems(path: Path, count: int) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(count), handle, strict=False)]


@dataclass
class Workload:
    """`sessions` threads over `endpoint`, each answering `problems_per_session` problems."""

    endpoint: str
    token: str | None
    problems: Sequence[dict[str, object]]
    sessions: int
    problems_per_session: int
    calls: list[CallRecord] = field(default_factory=list)
    questions: list[QuestionRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _t0: float = 0.0

    def run(self, on_call: Callable[[int], None] | None = None) -> float:
        """Run every session to its end; `on_call(n)` sees the running call count. Returns seconds."""
        self._t0 = time.perf_counter()
        threads = [threading.Thread(target=self._session, args=(i, on_call)) for i in range(self.sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - self._t0

    def _session(self, index: int, on_call: Callable[[int], None] | None) -> None:
        config = CloudLinkConfig(self.endpoint, self.token, timeout_s=60.0)
        link = RecordingLink(config)
        resilience = ResilienceConfig(retry=RetryPolicy(max_retries=4, backoff_s=0.1), breaker_s=0.5)
        with ResilientLLM(TritonLLM(config, link=link), resilience) as llm:
            for k in range(self.problems_per_session):
                problem = self.problems[(index * self.problems_per_session + k) % len(self.problems)]
                started = time.perf_counter()
                try:
                    self._question(index, llm, link, problem, on_call)
                    record = QuestionRecord(index, time.perf_counter() - started, True)
                except Exception as exc:  # recorded: the run reports questions that did not complete
                    record = QuestionRecord(index, time.perf_counter() - started, False, repr(exc))
                with self._lock:
                    self.questions.append(record)

    def _question(self, index: int, llm: ResilientLLM, link: RecordingLink, problem: dict[str, object],
                  on_call: Callable[[int], None] | None) -> None:
        conversation = llm.open([ChatMessage("user", str(problem["question"]))])
        transcript = ""
        for _ in range(len(problem["steps"]) + 1):  # type: ignore[arg-type]
            before = (link.reused_tokens, link.prefill_tokens)
            started = time.perf_counter()
            reply = conversation.call(LLMRequest(LLMAction.WRITE_STEP, transcript, GREEDY,
                                                 stop_strings=(STEP_DELIMITER,), max_tokens=MAX_STEP_TOKENS))
            transcript += reply.text + STEP_DELIMITER
            record = CallRecord(index, conversation.context_id, started - self._t0, time.time(),
                                reply.cost.round_trip_s, reply.cost.bytes_up, link.reused_tokens - before[0],
                                link.prefill_tokens - before[1], reply.cost.resynced)
            with self._lock:
                self.calls.append(record)
                count = len(self.calls)
            if on_call is not None:
                on_call(count)
            if reply.text.startswith("A:"):
                break
        conversation.close()
