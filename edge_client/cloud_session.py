"""The loop's side of one question's LLM conversation: calls with their cost, and the degraded path.

A cloud call that fails with `CloudUnavailableError` is not fatal: `cloud_or_degraded` lets the
SLM take over (the trace marks the step or answer "degraded"). It logs at DEBUG only: an outage
is announced once when it starts and once when it ends by the link's circuit breaker
(`edge_client.link.breaker`), not once per step.
`NotAuthorizedError` and other cloud errors are not hidden: they propagate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from edge_client.errors import CloudUnavailableError
from edge_client.llm_backend import (
    CallCost,
    LLMAction,
    LLMBackend,
    LLMConversation,
    LLMReply,
    LLMRequest,
    empty_score_reply,
)
from glimp_common.errors import BadInputError
from onnx_lm import ChatMessage, SamplingParams

log = logging.getLogger(__name__)

T = TypeVar("T")


def cloud_or_degraded(attempt: Callable[[], T], degrade: Callable[[str], T], what: str) -> T:
    """`attempt()`; if the cloud is unavailable, log `what` (DEBUG) and return `degrade(why)` instead."""
    try:
        return attempt()
    except CloudUnavailableError as exc:
        log.debug("%s: %s", what, exc)
        return degrade(str(exc))


class CloudSession:
    """One question's conversation with the LLM, or the reason there is none."""

    def __init__(self, llm: LLMBackend | None) -> None:
        self.llm = llm
        self.conversation: LLMConversation | None = None
        self.down = ""  # why the conversation could not be opened

    def open(self, messages: Sequence[ChatMessage]) -> None:
        """Open the conversation; an unavailable cloud leaves the SLM to carry on alone."""
        if self.llm is None:
            return
        try:
            self.conversation = self.llm.open(messages)
        except CloudUnavailableError as exc:
            log.warning("cloud unavailable, the SLM carries on alone: %s", exc)
            self.down = str(exc)

    def resume(self, conversation: LLMConversation, answer: str, messages: Sequence[ChatMessage]) -> None:
        """Continue a held conversation with the next turn's new `messages` (see
        `LLMConversation.next_turn`; no call is made until the first step or answer needs one)."""
        conversation.next_turn(answer, messages)
        self.conversation = conversation

    def call(self, request: LLMRequest, costs: list[CallCost]) -> LLMReply:
        """One LLM call; its cost (or, if it fails, the time lost waiting) goes to `costs`.

        A SCORE of an empty candidate is answered by the protocol's rule, with no call and no
        cost, even while the cloud is down (nothing to ask it).
        """
        empty = empty_score_reply(request)
        if empty is not None:
            return empty
        if self.conversation is None:
            raise CloudUnavailableError(self.down or "no LLM conversation is open")
        started = time.perf_counter()
        try:
            reply = self.conversation.call(request)
        except CloudUnavailableError:
            costs.append(CallCost(round_trip_s=time.perf_counter() - started))
            raise
        costs.append(reply.cost)
        return reply

    def score(
        self, transcript: str, sampling: SamplingParams, candidate: str, costs: list[CallCost],
    ) -> float:
        """The LLM's mean log-probability per token of `candidate` after `transcript` (nats)."""
        request = LLMRequest(LLMAction.SCORE, transcript, sampling, candidate=candidate)
        reply = self.call(request, costs)
        if reply.mean_logprob is None:
            raise BadInputError(f"the LLM backend {self.llm!r} returned no score for a SCORE call")
        return reply.mean_logprob

    def push(self, transcript: str) -> None:
        """Let a backend that syncs in the background send the SLM's steps now.

        Called at the start of a step, with the delimiter already appended: every later call's
        transcript extends what is pushed, so the cloud never has to be resent anything.
        """
        if self.conversation is not None:
            self.conversation.push(transcript)

    def close(self) -> None:
        if self.conversation is not None:
            conversation, self.conversation = self.conversation, None
            conversation.close()
