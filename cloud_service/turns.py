"""A conversation's next turn on the context that holds the turn before, for every engine.

A call with `next_turn` (protos/edge_cloud_v1.proto, `NextTurn`) names the context's state as any
call does; once that base matches, the held text becomes the assistant's turn (its answer starts
at `answer_offset_bytes`), the new messages follow, and the call is served exactly as a create
over that longer conversation would be. So an engine needs no path of its own: `open_turn` hands
back the equivalent create call, and the engine's create path renders it with the model's
template and keeps the KV it already holds where the new prompt shares its tokens (the ONNX
engine's `LMContext.sync`, vLLM's prefix cache). A stale base is the usual typed mismatch, and
the edge answers it by resending the whole conversation with create=true, which reaches the same
state: only the bytes sent differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from cloud_service.errors import InvalidRequest
from cloud_service.mismatch import held_or_mismatch
from cloud_service.validation import EMPTY_VIEW, MAX_MESSAGES, Call, NextTurn
from onnx_lm import ChatMessage
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptView


class HeldConversation(Protocol):
    """What an engine's stored context offers a next turn: its prompt messages and committed text."""

    messages: tuple[tuple[str, str], ...]  # (role, content), as the digest hashes them
    text: str  # the appended text committed after the prompt

    def view(self) -> TranscriptView: ...


Held = TypeVar("Held", bound=HeldConversation)


def open_turn(
    call: Call, lookup: Callable[[], Held | None], counts: Counter[str],
) -> Call | pb.ContextMismatch:
    """`call` itself unless it opens a next turn; then the base check (a mismatch is counted in
    `counts` and returned) and the create call over the continued conversation.

    `lookup` fetches the held context (called only for a next turn, so that other calls are
    looked up, and counted as hits or misses, once, by the engine itself).
    """
    if call.next_turn is None:
        return call
    held = held_or_mismatch(call, lookup(), counts)
    if isinstance(held, pb.ContextMismatch):
        return held
    messages = continued_messages(held.messages, held.text, call.next_turn)
    return replace(call, create=True, messages=messages, base=EMPTY_VIEW, next_turn=None)


def continued_messages(
    messages: tuple[tuple[str, str], ...], text: str, turn: NextTurn,
) -> tuple[ChatMessage, ...]:
    """The conversation after `turn`: `messages`, the assistant's answer (the tail of `text` from
    the turn's offset), the new messages. InvalidRequest for an offset past the text or inside a
    character, or a conversation longer than a create may carry."""
    data = text.encode("utf-8")
    if turn.answer_offset_bytes > len(data):
        raise InvalidRequest(
            f"next_turn.answer_offset_bytes is {turn.answer_offset_bytes}, but the context holds "
            f"{len(data)} bytes of text: give the offset where the held answer starts"
        )
    try:
        answer = data[turn.answer_offset_bytes:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("next_turn.answer_offset_bytes must fall on a UTF-8 character boundary") from exc
    held = tuple(ChatMessage(role, content) for role, content in messages)
    continued = (*held, ChatMessage("assistant", answer), *turn.messages)
    if len(continued) > MAX_MESSAGES:
        raise InvalidRequest(
            f"the conversation would hold {len(continued)} messages, more than the {MAX_MESSAGES} a "
            "context may have: start a new conversation"
        )
    return continued
