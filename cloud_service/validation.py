"""Turning a serialized `StepRequest` into a checked `Call`, or an `InvalidRequest` saying why not.

Everything a client controls is checked here, before the engine touches any state: protocol
version, ids, credential, action, sizes, sampling ranges, stop strings. What needs the model's
tokenizer (the context window) is checked by the engine.
"""

from __future__ import annotations

import hashlib
import math
import string
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from cloud_service.errors import InvalidRequest
from glimp_common.errors import BadInputError
from onnx_lm import GREEDY, ChatMessage, SamplingParams
from protos import contract
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptView

MIN_CLIENT_KEY_BYTES = 16  # the credential contexts are scoped to: at least 128 bits
MAX_CLIENT_KEY_BYTES = 256
MAX_CONTEXT_ID_CHARS = 128
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_BYTES = 256
MAX_MESSAGES = 64
WRITE_ACTIONS = (pb.WRITE_STEP, pb.WRITE_ANSWER)
KNOWN_ACTIONS = (pb.WRITE_STEP, pb.WRITE_ANSWER, pb.ABSORB, pb.CLOSE, pb.SCORE)
EMPTY_VIEW = TranscriptView(0, "")

ContextKey = tuple[str, str]  # (sha256 hex of the client key, context id)


@dataclass(frozen=True)
class NextTurn:
    """The request's `next_turn` (see cloud_service.turns): where the held answer starts, what follows."""

    answer_offset_bytes: int
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True)
class Call:
    """A validated request, in the engine's terms."""

    key: ContextKey  # where the context lives: scoped to the caller's credential
    action: int  # a pb.Action value
    create: bool
    messages: tuple[ChatMessage, ...]  # the prompt (create only)
    base: TranscriptView  # what the client believes the server holds
    new_text: str
    sampling: SamplingParams
    stop_strings: tuple[str, ...]  # extra stop strings from the client
    max_tokens: int
    score_chars: int  # SCORE: how many trailing characters of new_text are scored
    next_turn: NextTurn | None = None  # the conversation's next turn on the held context
    version: int = contract.PROTOCOL_VERSION  # the client's: its reply's states are written in it
    stream: bool = False  # v2: send the written text in pieces before the final reply (engines may not)

    @property
    def writes(self) -> bool:
        return self.action in WRITE_ACTIONS


def parse_request(data: bytes) -> pb.StepRequest:
    """Deserialize the REQUEST tensor's bytes."""
    if not data:
        raise InvalidRequest("the REQUEST tensor is empty; send one serialized glimp.v1.StepRequest")
    try:
        return pb.StepRequest.FromString(data)
    except DecodeError as exc:
        raise InvalidRequest(
            f"the REQUEST tensor is not a serialized glimp.v1.StepRequest ({exc}); "
            "build it with protos.edge_cloud_v1_pb2"
        ) from exc


def validate(request: pb.StepRequest) -> Call:
    """Check every field of `request`; raise InvalidRequest naming the first problem found."""
    if request.protocol_version not in contract.SUPPORTED_PROTOCOL_VERSIONS:
        spoken = " and ".join(str(v) for v in contract.SUPPORTED_PROTOCOL_VERSIONS)
        raise InvalidRequest(
            f"protocol_version {request.protocol_version} is not supported; this server speaks "
            f"versions {spoken}: use a client of one of them"
        )
    _check_action(request)
    _check_sizes(request)
    return Call(
        key=(_credential_hash(request.client_key), _context_id(request.context_id)),
        action=request.action,
        create=request.create,
        messages=_messages(request),
        base=_base(request),
        new_text=request.new_text,
        sampling=_sampling(request),
        stop_strings=_stop_strings(request),
        max_tokens=_max_tokens(request),
        score_chars=_score_chars(request),
        next_turn=_next_turn(request),
        version=request.protocol_version,
        stream=_stream(request),
    )


def _check_action(request: pb.StepRequest) -> None:
    if request.action not in KNOWN_ACTIONS:
        raise InvalidRequest(
            f"action {request.action} is not one of WRITE_STEP, WRITE_ANSWER, ABSORB, CLOSE, SCORE"
        )


def _check_sizes(request: pb.StepRequest) -> None:
    text_bytes = len(request.new_text.encode("utf-8"))
    text_bytes += sum(len(m.content.encode("utf-8")) for m in request.messages)
    text_bytes += sum(len(m.content.encode("utf-8")) for m in request.next_turn.messages)
    if text_bytes > contract.MAX_REQUEST_TEXT_BYTES:
        raise InvalidRequest(
            f"the request carries {text_bytes} bytes of text, more than the limit of "
            f"{contract.MAX_REQUEST_TEXT_BYTES}; send the transcript in smaller ABSORB calls"
        )


def _credential_hash(client_key: bytes) -> str:
    if not MIN_CLIENT_KEY_BYTES <= len(client_key) <= MAX_CLIENT_KEY_BYTES:
        raise InvalidRequest(
            f"client_key has {len(client_key)} bytes; it must hold {MIN_CLIENT_KEY_BYTES} to "
            f"{MAX_CLIENT_KEY_BYTES} random bytes (e.g. os.urandom(32))"
        )
    return hashlib.sha256(client_key).hexdigest()


def _context_id(context_id: str) -> str:
    if not context_id:
        raise InvalidRequest("context_id is empty; use a random hex id of at least 32 digits (uuid4().hex)")
    if not contract.CONTEXT_ID_MIN_HEX <= len(context_id) <= MAX_CONTEXT_ID_CHARS or any(
        c not in string.hexdigits for c in context_id
    ):
        raise InvalidRequest(
            f"context_id must be {contract.CONTEXT_ID_MIN_HEX} to {MAX_CONTEXT_ID_CHARS} hex digits "
            f"(128+ random bits, e.g. uuid4().hex), got {len(context_id)} characters"
        )
    return context_id.lower()


def _messages(request: pb.StepRequest) -> tuple[ChatMessage, ...]:
    if not request.create:
        if request.messages:
            raise InvalidRequest("messages are only sent with create=true; drop them or set create")
        return ()
    if not request.messages or len(request.messages) > MAX_MESSAGES:
        raise InvalidRequest(
            f"create=true needs 1 to {MAX_MESSAGES} prompt messages, got {len(request.messages)}"
        )
    try:
        return tuple(ChatMessage(m.role, m.content) for m in request.messages)
    except BadInputError as exc:
        raise InvalidRequest(str(exc)) from exc


def _next_turn(request: pb.StepRequest) -> NextTurn | None:
    if not request.HasField("next_turn"):
        return None
    if request.create:
        raise InvalidRequest("next_turn continues a held context; it cannot come with create=true "
                             "(a create sends the whole conversation in messages)")
    if request.action == pb.CLOSE:
        raise InvalidRequest("next_turn continues a context; CLOSE forgets it: send one or the other")
    turn = request.next_turn
    if not 1 <= len(turn.messages) <= MAX_MESSAGES:
        raise InvalidRequest(f"next_turn needs 1 to {MAX_MESSAGES} new messages, got {len(turn.messages)}")
    try:
        messages = tuple(ChatMessage(m.role, m.content) for m in turn.messages)
    except BadInputError as exc:
        raise InvalidRequest(f"next_turn: {exc}") from exc
    return NextTurn(int(turn.answer_offset_bytes), messages)


def _base(request: pb.StepRequest) -> TranscriptView:
    _check_digest_form(request)
    base = contract.claimed_view(request.base, request.protocol_version)
    if request.create and base != EMPTY_VIEW:
        raise InvalidRequest(
            "create=true starts a context from its messages: base must be empty "
            f"(length 0, digest ''), got length {base.length_bytes}"
        )
    return base


def _stream(request: pb.StepRequest) -> bool:
    if request.stream and request.protocol_version == 1:
        raise InvalidRequest("stream is version 2's field: send protocol_version 2 to stream a write")
    return request.stream and request.action in (pb.WRITE_STEP, pb.WRITE_ANSWER)


def _check_digest_form(request: pb.StepRequest) -> None:
    """Version 1 sends the digest in hex (base.digest), version 2 in raw bytes (base.digest_raw)."""
    base = request.base
    if request.protocol_version == 1:
        if base.digest_raw:
            raise InvalidRequest("base.digest_raw is version 2's field; a version-1 request sends "
                                 "base.digest (hex)")
        return
    if base.digest:
        raise InvalidRequest("base.digest (hex) is version 1's field; a version-2 request sends "
                             f"base.digest_raw ({contract.RAW_DIGEST_BYTES} bytes)")
    if base.digest_raw and len(base.digest_raw) != contract.RAW_DIGEST_BYTES:
        raise InvalidRequest(f"base.digest_raw must be {contract.RAW_DIGEST_BYTES} bytes (the sha256's "
                             f"first {contract.RAW_DIGEST_BYTES}), got {len(base.digest_raw)}")


def _sampling(request: pb.StepRequest) -> SamplingParams:
    if not request.HasField("sampling"):
        return GREEDY  # a request without sampling settings decodes greedily
    s = request.sampling
    # proto3 cannot tell an unset top_p from 0; 0 is not a usable nucleus, so it means "no cut".
    top_p = 1.0 if s.top_p == 0 else float(s.top_p)
    if not math.isfinite(s.temperature) or s.temperature < 0 or s.temperature > 100:
        raise InvalidRequest(f"sampling.temperature must be in [0, 100] (0: greedy), got {s.temperature}")
    try:
        return SamplingParams(
            temperature=float(s.temperature), top_p=top_p, seed=s.seed if s.HasField("seed") else None
        )
    except BadInputError as exc:
        raise InvalidRequest(f"sampling: {exc}") from exc


def _stop_strings(request: pb.StepRequest) -> tuple[str, ...]:
    stops = tuple(request.stop)
    if len(stops) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(stops)}")
    for stop in stops:
        if not stop or len(stop.encode("utf-8")) > MAX_STOP_STRING_BYTES:
            raise InvalidRequest(
                f"stop strings must be 1 to {MAX_STOP_STRING_BYTES} bytes, got {len(stop.encode('utf-8'))}"
            )
    return stops


def _max_tokens(request: pb.StepRequest) -> int:
    limit = contract.MAX_MAX_TOKENS
    if request.action in WRITE_ACTIONS and not 1 <= request.max_tokens <= limit:
        raise InvalidRequest(f"max_tokens must be in 1..{limit} for a write, got {request.max_tokens}")
    if request.max_tokens > limit:
        raise InvalidRequest(f"max_tokens must be at most {limit}, got {request.max_tokens}")
    return int(request.max_tokens)


def _score_chars(request: pb.StepRequest) -> int:
    if request.action != pb.SCORE:
        if request.score_bytes:
            raise InvalidRequest("score_bytes is only used with action SCORE; leave it 0")
        return 0
    data = request.new_text.encode("utf-8")
    if not 1 <= request.score_bytes <= len(data):
        raise InvalidRequest(
            f"score_bytes must be in 1..{len(data)} (the bytes of new_text), got {request.score_bytes}"
        )
    try:
        return len(data[len(data) - request.score_bytes:].decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRequest("score_bytes must cut new_text at a UTF-8 character boundary") from exc
