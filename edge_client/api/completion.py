"""One chat completion's response, whole or as chunks: ids, choices, the degraded flag, usage."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from edge_client.api.engine import Finished
from edge_client.api.schema import ChatRequest
from edge_client.api.settings import ApiSettings
from edge_client.api.streaming import Delta, whole_texts
from edge_client.api.usage import is_degraded, usage_of

FINGERPRINT = "glimp-edge-cloud"
DEGRADED_FINGERPRINT = "glimp-edge-degraded"  # some of the answer was written without the cloud


def finish_reason(finished: Finished, stopped: bool) -> str:
    """OpenAI's finish_reason: "length" when the answer ran out of tokens, else "stop"."""
    if stopped:
        return "stop"
    return "length" if finished.result.answer_record.stop in ("max_tokens", "context") else "stop"


@dataclass
class Completion:
    """What every chunk (or the one response) of a completion shares."""

    request: ChatRequest
    settings: ApiSettings
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    degraded: bool = False

    def whole(self, finished: Finished, delimiter: str, think_end: str | None) -> dict[str, Any]:
        """The non-streamed response."""
        reasoning, content, stopped = whole_texts(finished.result, delimiter, think_end, self.request.stop)
        self.degraded = is_degraded(finished.result)
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        choice = {"index": 0, "message": message, "logprobs": None,
                  "finish_reason": finish_reason(finished, stopped)}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage(finished)}

    def usage(self, finished: Finished) -> dict[str, Any]:
        return usage_of(finished.result, finished.prompt_tokens, self.settings.prices, finished.continued)

    def first_chunk(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def delta_chunk(self, delta: Delta) -> dict[str, Any]:
        self.degraded = self.degraded or delta.writer == "degraded"
        chunk = self._chunk({delta.kind: delta.text})
        chunk["glimp"] = {"writer": delta.writer, "step": delta.step}
        return chunk

    def last_chunk(self, finished: Finished, stopped: bool) -> dict[str, Any]:
        self.degraded = self.degraded or is_degraded(finished.result)
        chunk = self._chunk({}, finish_reason(finished, stopped))
        chunk["glimp"] = {"degraded": self.degraded, "degraded_steps": finished.result.totals.degraded_steps}
        return chunk

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage(finished)}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self._head("chat.completion.chunk"), "choices": [choice]}

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.settings.model_id,
                "system_fingerprint": DEGRADED_FINGERPRINT if self.degraded else FINGERPRINT}
