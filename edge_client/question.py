"""What the writers of one question share: the SLM's context, the transcript, the cloud, the events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_client.cloud_session import CloudSession
from edge_client.llm_backend import LLMAction, LLMRequest
from edge_client.trace import Event, EventCallback, TextWritten
from onnx_lm import CausalLM, LMContext, SamplingParams, StopReason, SyncStats


@dataclass
class QuestionState:
    """One question in progress. The transcript is the text appended after the prompt so far."""

    slm: CausalLM
    ctx: LMContext  # the SLM's KV cache, synced to prompt + transcript before each SLM turn
    prompt: str  # rendered with the SLM's template
    sampling: SamplingParams  # steps, probes and answer alike
    rng: np.random.Generator  # the SLM's random stream
    stop_strings: tuple[str, ...]  # the step delimiter, and the end-of-thinking marker if any
    think_end: str | None
    cloud: CloudSession
    on_event: EventCallback | None
    transcript: str = ""

    def sync(self) -> SyncStats:
        """Bring the SLM's context up to prompt + transcript (the side that did not write ingests)."""
        return self.ctx.sync(self.prompt + self.transcript)

    def context_room(self, text: str) -> int:
        """Tokens that still fit in the SLM's context after `text`."""
        return self.slm.manifest.max_context_tokens - len(self.slm.tokenizer.encode(text))

    def step_request(self, max_tokens: int) -> LLMRequest:
        return LLMRequest(LLMAction.WRITE_STEP, self.transcript, self.sampling, self.stop_strings, max_tokens)

    def stop_kind(self, stop_reason: str, stop_string: str | None) -> str:
        """How a step ended: "think_end", "delimiter", "eos" or "max_tokens"."""
        if stop_reason == StopReason.STOP_STRING.value:
            return "think_end" if self.think_end and stop_string == self.think_end else "delimiter"
        return "eos" if stop_reason == StopReason.EOS.value else "max_tokens"

    def marked(self, text: str, stop: str) -> str:
        """The step as appended: a step that ended at the end-of-thinking marker keeps the marker."""
        return text + (self.think_end or "") if stop == "think_end" else text

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def stream(self, text: str) -> None:
        self.emit(TextWritten(text))
