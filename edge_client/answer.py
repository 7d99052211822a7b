"""The final answer after the end-of-thinking marker: by the LLM (the paper), by the SLM, or none.

An LLM answer that cannot reach the cloud is written by the SLM instead ("degraded").
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from edge_client.cloud_session import cloud_or_degraded
from edge_client.llm_backend import CallCost, LLMAction, LLMRequest
from edge_client.question import QuestionState
from edge_client.trace import AnswerFinished, AnswerRecord, AnswerStarted, TextWritten, cost_parts
from onnx_lm import StopCriteria, decode_until


class AnswerWriter:
    """Writes the answer with `answer_by` ("llm", "slm" or "none"), up to `max_tokens`."""

    def __init__(self, q: QuestionState, answer_by: str, max_tokens: int) -> None:
        self.q = q
        self.answer_by = answer_by
        self.max_tokens = max_tokens

    def write(self) -> AnswerRecord:
        if self.answer_by == "none":
            return AnswerRecord("none", "", "skipped", 0)
        started = time.perf_counter()
        if self.answer_by == "slm":
            return self._by_slm("edge", started)
        costs: list[CallCost] = []
        return cloud_or_degraded(
            lambda: self._by_llm(started, costs),
            lambda error: self._by_slm("degraded", started, error, costs),
            "cloud unavailable for the final answer, the SLM writes it",
        )

    def _by_llm(self, started: float, costs: list[CallCost]) -> AnswerRecord:
        q = self.q
        request = LLMRequest(LLMAction.WRITE_ANSWER, q.transcript, q.sampling, (), self.max_tokens)
        reply = q.cloud.call(request, costs)
        q.emit(AnswerStarted("cloud"))
        q.emit(TextWritten(reply.text))
        timing, traffic = cost_parts(costs, wall_s=time.perf_counter() - started)
        tokens = reply.cost.decode_tokens
        prefill = sum(cost.prefill_tokens for cost in costs)
        record = AnswerRecord("cloud", reply.text, reply.stop_reason, tokens, timing, traffic,
                              llm_prefill_tokens=prefill)
        q.emit(AnswerFinished(record))
        return record

    def _by_slm(
        self, writer: str, started: float, error: str = "", costs: Sequence[CallCost] = (),
    ) -> AnswerRecord:
        q = self.q
        edge_started = time.perf_counter()
        q.emit(AnswerStarted(writer))
        room = q.context_room(q.prompt + q.transcript)
        if room < 1:
            text, stop, tokens, edge_s = "", "context", 0, 0.0
        else:
            q.sync()
            criteria = StopCriteria((), min(self.max_tokens, room))
            gen = decode_until(q.ctx, q.sampling, criteria, q.rng, on_text=q.stream)
            text, stop, tokens = gen.text, gen.stop_reason.value, gen.num_tokens
            edge_s = time.perf_counter() - edge_started
        timing, traffic = cost_parts(costs, edge_compute_s=edge_s, wall_s=time.perf_counter() - started)
        record = AnswerRecord(writer, text, stop, tokens, timing, traffic, error)
        q.emit(AnswerFinished(record))
        return record
