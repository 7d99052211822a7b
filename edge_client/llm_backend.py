"""The one interface the step loop uses to reach the large model, wherever it runs.

Implementations: `ResilientLLM` (the cloud over gRPC with retries and a breaker,
`edge_client.connect`), the bare `TritonLLM` under it (edge_client/link/) and `InProcessLLM` (an ONNX
LLM in this process: tests and a no-network baseline).

The loop hands a conversation the *whole* appended transcript on every call; the conversation
works out what the other side has not seen yet (the delta) and, on a context mismatch,
resends everything. So the loop never needs to know where the LLM runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from onnx_lm import ChatMessage, SamplingParams


class LLMAction(StrEnum):
    WRITE_STEP = "write_step"  # write one reasoning step (stops at the delimiter / stop strings)
    WRITE_ANSWER = "write_answer"  # write the final answer (stops at EOS / stop strings)
    ABSORB = "absorb"  # only take in the transcript (background context sync)
    # Mean log-prob per token of `candidate` after the transcript; nothing is kept. An empty
    # candidate scores 0.0 nats/token without any call (`empty_score_reply`): every backend obeys.
    SCORE = "score"


@dataclass(frozen=True)
class LLMRequest:
    """One call: the action, the full appended transcript, and how to generate."""

    action: LLMAction
    transcript: str  # every text appended after the prompt so far (the conversation sends a delta)
    sampling: SamplingParams
    stop_strings: tuple[str, ...] = ()  # e.g. (step delimiter, end-of-thinking marker)
    max_tokens: int = 512
    candidate: str = ""  # SCORE only: the text to score, as if appended after the transcript ("": 0.0)
    # A write's text as the LLM streams it, piece by piece, before the reply (a preview: the reply's
    # text is what the server committed). Only a streaming cloud calls it; None: nobody is watching.
    on_text: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CallCost:
    """What one call cost, split the way the trace reports it. Zero where it does not apply."""

    bytes_up: int = 0  # serialized request bytes (gRPC message), 0 in process
    bytes_down: int = 0  # serialized reply bytes
    round_trip_s: float = 0.0  # client-side wall time of the call(s)
    queue_s: float = 0.0  # server: waiting before the model ran
    compute_s: float = 0.0  # server (or in-process model): everything it did for the call
    prefill_s: float = 0.0  # part of compute_s spent catching up with the new text
    decode_s: float = 0.0  # part of compute_s spent generating
    prefill_tokens: int = 0
    decode_tokens: int = 0
    resync_bytes_up: int = 0  # part of bytes_up spent on a full resend after a mismatch
    resync_s: float = 0.0  # part of round_trip_s spent on that resend
    resynced: bool = False
    first_text_s: float = 0.0  # from the call to its first text (a streamed piece, else the reply)

    @property
    def network_s(self) -> float:
        """Round trip minus what the server reports it spent (queue + compute)."""
        return max(0.0, self.round_trip_s - self.queue_s - self.compute_s)


@dataclass(frozen=True)
class LLMReply:
    text: str  # generated text without the stop string
    stop_reason: str  # "stop_string" | "eos" | "max_tokens" | "absorbed" | "scored"
    stop_string: str | None
    cost: CallCost
    mean_logprob: float | None = None  # SCORE only


EMPTY_CANDIDATE_SCORE = 0.0  # nats/token of an empty SCORE candidate: nothing to doubt, nothing sent


def empty_score_reply(request: LLMRequest) -> LLMReply | None:
    """The reply every backend gives a SCORE of an empty candidate, before any call; None otherwise.

    The one place of the rule: the cloud refuses an empty candidate on the wire (score_bytes
    must be >= 1), so the edge answers it itself, with no cost, for every backend alike.
    """
    if request.action != LLMAction.SCORE or request.candidate:
        return None
    return LLMReply("", "scored", None, CallCost(), mean_logprob=EMPTY_CANDIDATE_SCORE)


class LLMConversation(Protocol):
    """One question's context with the LLM.

    After WRITE_STEP / WRITE_ANSWER the LLM holds transcript + reply.text; after ABSORB, the
    transcript; after SCORE, what it held before (an empty candidate: 0.0, no call, see
    `LLMAction.SCORE`). Cloud faults raise `edge_client.errors.CloudError`.
    """

    def call(self, request: LLMRequest) -> LLMReply:
        """Run `request` on the whole appended transcript (the conversation sends what is new)."""
        ...

    def push(self, transcript: str) -> None:
        """Offer the transcript so far ahead of the next call (background sync); returns at once.

        A no-op for a backend with nothing to push: the next `call` carries the text anyway.
        """
        ...

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        """Continue this context with the conversation's next turn (no call is made here).

        What the LLM holds becomes the assistant's turn, `answer` being its reply as the user got
        it; `messages` follow, and the next call's transcript starts over from "". Each side
        renders the longer conversation with its own template and keeps what its cache shares.
        """
        ...

    def close(self) -> None:
        """Free this context (best effort)."""
        ...


class LLMBackend(Protocol):
    """Opens conversations with the large model; `close()` frees its channel and threads."""

    name: str  # "triton" | "in-process"

    @property
    def provider(self) -> str:
        """Where the LLM runs, for the trace: "triton HOST:PORT", an ONNX Runtime provider name, ..."""
        ...

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation: ...

    def close(self) -> None: ...
