"""`InProcessLLM`: the LLM backend over an ONNX model in this process.

For tests and for a no-network baseline: the same loop, the same interface as the Triton link,
with no bytes on the wire. Each conversation keeps its own KV cache, re-synced to the transcript
it is handed by longest-common-prefix reuse, as the cloud does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_client.llm_backend import CallCost, LLMAction, LLMReply, LLMRequest, empty_score_reply
from onnx_lm import (
    LLM_STREAM,
    CausalLM,
    ChatMessage,
    LMContext,
    SessionConfig,
    StopCriteria,
    decode_until,
    make_rng,
)
from onnx_lm.manifest import check_role


class InProcessLLM:
    """Opens conversations with an ONNX LLM loaded in this process."""

    name = "in-process"

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm

    @classmethod
    def load(cls, folder: Path | str, config: SessionConfig | None = None) -> InProcessLLM:
        """Load an LLM folder; BadInputError if its manifest says it is an SLM."""
        check_role(folder, "llm")
        return cls(CausalLM.load(folder, config))

    @property
    def provider(self) -> str:
        return self.lm.provider.name

    def open(self, messages: Sequence[ChatMessage]) -> InProcessConversation:
        return InProcessConversation(self.lm, messages)

    def close(self) -> None:
        """Nothing to free: the model stays loaded for whoever holds `lm`."""


class InProcessConversation:
    """One question's context with the in-process LLM."""

    def __init__(self, lm: CausalLM, messages: Sequence[ChatMessage]) -> None:
        self.lm = lm
        self.messages = tuple(messages)
        self.prompt = lm.tokenizer.render_prompt(self.messages)
        self.ctx = LMContext(lm)
        self._rng: np.random.Generator | None = None

    def call(self, request: LLMRequest) -> LLMReply:
        if (empty := empty_score_reply(request)) is not None:
            return empty
        started = time.perf_counter()
        view = self.prompt + request.transcript
        if request.action == LLMAction.WRITE_ANSWER:  # close this model's own thinking, if still open
            view += self.lm.tokenizer.closing_for_answer(view)
        stats = self.ctx.sync(view)
        if request.action == LLMAction.ABSORB:
            reply = LLMReply("", "absorbed", None, CallCost())
        elif request.action == LLMAction.SCORE:
            score = self._score(request.transcript, request.candidate)
            reply = LLMReply("", "scored", None, CallCost(), mean_logprob=score)
        else:
            reply = self._write(request)
        elapsed_s = time.perf_counter() - started
        cost = CallCost(
            round_trip_s=elapsed_s, compute_s=elapsed_s, prefill_tokens=stats.prefill_tokens,
            decode_tokens=reply.cost.decode_tokens, first_text_s=elapsed_s,
        )
        return LLMReply(reply.text, reply.stop_reason, reply.stop_string, cost, reply.mean_logprob)

    def push(self, transcript: str) -> None:
        """Nothing to push: the next call syncs the KV cache to its transcript anyway."""

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        """The conversation's next turn: the prompt is the longer conversation, rendered by this
        model's template; the KV cache keeps the tokens the two renderings share."""
        self.messages = (*self.messages, ChatMessage("assistant", answer), *messages)
        self.prompt = self.lm.tokenizer.render_prompt(self.messages)

    def close(self) -> None:
        self.ctx.reset()

    def _write(self, request: LLMRequest) -> LLMReply:
        if self._rng is None:  # one stream per conversation: reproducible under a seed
            self._rng = make_rng(request.sampling, LLM_STREAM)
        room = self.lm.manifest.max_context_tokens - self.ctx.length
        if room < 1:
            return LLMReply("", "max_tokens", None, CallCost())
        stop = StopCriteria(tuple(request.stop_strings), min(request.max_tokens, room))
        gen = decode_until(self.ctx, request.sampling, stop, self._rng)
        cost = CallCost(decode_tokens=gen.num_tokens)
        return LLMReply(gen.text, gen.stop_reason.value, gen.stop_string, cost)

    def _score(self, transcript: str, candidate: str) -> float:
        """Mean log-probability per token of a non-empty `candidate` right after the transcript."""
        return self.ctx.score_tail(self.prompt + transcript + candidate, len(candidate)).mean_logprob
