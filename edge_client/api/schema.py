"""The chat-completion request: OpenAI's fields this endpoint honours, validated into loop settings.

Fields OpenAI defines but this endpoint does not use (`frequency_penalty`, `user`, `logit_bias`,
...) are ignored, as vLLM and llama.cpp's server do, so existing apps keep working. Fields that
would change the answer's meaning and cannot be honoured (`n` > 1, tools, non-text content) are
refused with 400. `max_tokens` (or `max_completion_tokens`) bounds the answer (`content`); the
reasoning is bounded by the server's step budget. `offline_ok` (an extension, sent by the
`openai` client through `extra_body`) overrides the server's `--offline-ok` for one request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_client.api.errors import ApiError, bad_request
from edge_client.config import StepSettings
from glimp_common.errors import BadInputError
from onnx_lm import ChatMessage

MAX_STOP_STRINGS = 4  # as OpenAI's API


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    tools: list[Any] | None = None
    offline_ok: bool | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A validated request, in the loop's terms."""

    model: str
    messages: tuple[ChatMessage, ...]  # system first if any; the last is the user's
    stream: bool
    include_usage: bool  # streaming: send a last chunk with `usage`
    steps: StepSettings  # the server's settings with the request's sampling and answer bound
    stop: tuple[str, ...]  # the answer ends before the first of these
    offline_ok: bool | None  # None: the server's setting


def parse_request(body: Any, defaults: StepSettings) -> ChatRequest:
    """Validate a decoded JSON body; ApiError (400) naming the field that is wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        raw = _ChatRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(first["loc"])
        raise bad_request(f"{param}: {first['msg']}", param, "invalid_value") from None
    if raw.tools:
        raise bad_request("tools are not supported by this endpoint", "tools", "unsupported_parameter")
    messages = tuple(_message(m, i) for i, m in enumerate(raw.messages))
    if messages[-1].role != "user":
        raise bad_request("the last message must be the user's (the turn to answer)", "messages",
                          "invalid_value")
    return ChatRequest(raw.model, messages, raw.stream,
                       bool(raw.stream_options and raw.stream_options.include_usage),
                       _steps(raw, defaults), _stops(raw.stop), raw.offline_ok)


def _message(message: _Message, index: int) -> ChatMessage:
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    role = "system" if message.role == "developer" else message.role  # OpenAI's newer name for system
    if content is None or (message.role == "user" and not content.strip()):
        raise bad_request(f"message {index} ({message.role}) has no text", f"messages[{index}].content",
                          "invalid_value")
    return ChatMessage(role, content)


def _steps(raw: _ChatRequest, defaults: StepSettings) -> StepSettings:
    changes: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed"):
        if getattr(raw, name) is not None:
            changes[name] = getattr(raw, name)
    answer_max = raw.max_completion_tokens or raw.max_tokens
    if answer_max is not None:
        changes["answer_max_tokens"] = answer_max
    try:
        return replace(defaults, **changes)
    except BadInputError as exc:
        raise bad_request(str(exc), None, "invalid_value") from None


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", "stop",
                          "invalid_value")
    if any(not s for s in stops):
        raise bad_request("a stop string must not be empty", "stop", "invalid_value")
    return tuple(stops)


def _param(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'role') -> 'messages[0].role', the way OpenAI names a parameter."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


__all__ = ["ApiError", "ChatRequest", "parse_request"]
