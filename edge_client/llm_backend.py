"""The one interface the step loop uses to reach the large model, wherever it runs.

Two implementations: `TritonLLM` (the cloud over gRPC, edge_client/cloud_link.py) and
`InProcessLLM` (an ONNX LLM in this process: tests and a no-network baseline).

The loop hands a conversation the *whole* appended transcript on every call; the conversation
works out what the other side has not seen yet (the delta) and, on a context mismatch,
resends everything. So the loop never needs to know where the LLM runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from onnx_lm import ChatMessage, SamplingParams


class LLMAction(StrEnum):
    WRITE_STEP = "write_step"  # write one reasoning step (stops at the delimiter / stop strings)
    WRITE_ANSWER = "write_answer"  # write the final answer (stops at EOS / stop strings)
    ABSORB = "absorb"  # only take in the transcript (background context sync)
    SCORE = "score"  # mean log-prob of `candidate` after the transcript; nothing is kept


@dataclass(frozen=True)
class LLMRequest:
    """One call: the action, the full appended transcript, and how to generate."""

    action: LLMAction
    transcript: str  # every text appended after the prompt so far (the conversation sends a delta)
    sampling: SamplingParams
    stop_strings: tuple[str, ...] = ()  # e.g. (step delimiter, end-of-thinking marker)
    max_tokens: int = 512
    candidate: str = ""  # SCORE only: the text to score, as if appended after the transcript


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

    @property
    def network_s(self) -> float:
        """Round trip minus what the server reports it spent (queue + compute)."""
        return max(0.0, self.round_trip_s - self.queue_s - self.compute_s)


@dataclass(frozen=True)
class LLMReply:
    text: str  # generated text without the stop string
    stop_reason: str  # "stop_string" | "eos" | "max_tokens" | "absorbed"
    stop_string: str | None
    cost: CallCost
    mean_logprob: float | None = None  # SCORE only


class LLMConversation(Protocol):
    """One question's context with the LLM.

    After WRITE_STEP / WRITE_ANSWER the LLM holds transcript + reply.text; after ABSORB, the
    transcript; after SCORE, what it held before. Cloud faults raise `edge_client.errors.CloudError`.
    """

    def call(self, request: LLMRequest) -> LLMReply: ...

    def push(self, transcript: str) -> None:
        """Hand over the transcript for background sync; a no-op where a backend has nothing to push."""

    def close(self) -> None: ...


class LLMBackend(Protocol):
    """Opens conversations with the large model."""

    name: str  # "triton" | "in-process"

    @property
    def provider(self) -> str:
        """Where the model runs, for the trace ("triton", "CPUExecutionProvider", ...)."""
        ...

    def open(self, messages: Sequence[ChatMessage]) -> LLMConversation: ...
