"""The contract's check of a call's base against what the server holds, shared by every engine.

A call that does not create its context names the transcript it believes the server holds
(length + digest). Any difference is a typed `ContextMismatch` reply, never an error, and the
client resends the whole transcript with create=true (protos/edge_cloud_v1.proto).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol, TypeVar

from cloud_service.validation import Call
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptView, transcript_state

_RESEND = "resend it with create=true"


class HeldContext(Protocol):
    """What an engine's stored context offers the check: the transcript it holds."""

    def view(self) -> TranscriptView: ...


Held = TypeVar("Held", bound=HeldContext)


def held_or_mismatch(call: Call, entry: Held | None, counts: Counter[str]) -> Held | pb.ContextMismatch:
    """`entry` when the call's base matches it; else the typed mismatch, counted by kind in `counts`."""
    mismatch = base_mismatch(call, entry.view() if entry is not None else None)
    if mismatch is not None:
        counts[pb.ContextMismatch.Kind.Name(mismatch.kind)] += 1
        return mismatch
    assert entry is not None  # base_mismatch answers UNKNOWN_CONTEXT for a missing one
    return entry


def base_mismatch(call: Call, held: TranscriptView | None) -> pb.ContextMismatch | None:
    """The mismatch between `call.base` and `held` (None: no such context here), or None if they agree."""
    if held is None:
        return _mismatch(pb.ContextMismatch.UNKNOWN_CONTEXT, None,
                         f"no such context for this credential: {_RESEND}", call.version)
    if call.base.length_bytes != held.length_bytes:
        return _mismatch(pb.ContextMismatch.LENGTH_MISMATCH, held,
                         f"server holds {held.length_bytes} bytes, the client said {call.base.length_bytes}: "
                         f"{_RESEND}", call.version)
    if not call.base.agrees_with(held, call.version):
        return _mismatch(pb.ContextMismatch.DIGEST_MISMATCH, held, f"same length, different text: {_RESEND}",
                         call.version)
    return None


def _mismatch(kind: pb.ContextMismatch.Kind, held: TranscriptView | None, detail: str,
              version: int) -> pb.ContextMismatch:
    state = transcript_state(held, version) if held else None
    return pb.ContextMismatch(kind=kind, server_state=state, detail=detail)
