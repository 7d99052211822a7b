from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    WRITE_STEP: _ClassVar[Action]
    WRITE_ANSWER: _ClassVar[Action]
    ABSORB: _ClassVar[Action]
    CLOSE: _ClassVar[Action]
    SCORE: _ClassVar[Action]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_STRING: _ClassVar[StopReason]
    EOS: _ClassVar[StopReason]
    MAX_TOKENS: _ClassVar[StopReason]
    ABSORBED: _ClassVar[StopReason]
ACTION_UNSPECIFIED: Action
WRITE_STEP: Action
WRITE_ANSWER: Action
ABSORB: Action
CLOSE: Action
SCORE: Action
STOP_REASON_UNSPECIFIED: StopReason
STOP_STRING: StopReason
EOS: StopReason
MAX_TOKENS: StopReason
ABSORBED: StopReason

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class TranscriptState(_message.Message):
    __slots__ = ("length_bytes", "digest", "digest_raw")
    LENGTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_RAW_FIELD_NUMBER: _ClassVar[int]
    length_bytes: int
    digest: str
    digest_raw: bytes
    def __init__(self, length_bytes: _Optional[int] = ..., digest: _Optional[str] = ..., digest_raw: _Optional[bytes] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("temperature", "top_p", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("protocol_version", "context_id", "client_key", "create", "messages", "base", "new_text", "action", "sampling", "stop", "max_tokens", "score_bytes", "next_turn", "stream")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    NEW_TEXT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_TURN_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    context_id: str
    client_key: bytes
    create: bool
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    base: TranscriptState
    new_text: str
    action: Action
    sampling: Sampling
    stop: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    score_bytes: int
    next_turn: NextTurn
    stream: bool
    def __init__(self, protocol_version: _Optional[int] = ..., context_id: _Optional[str] = ..., client_key: _Optional[bytes] = ..., create: _Optional[bool] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., base: _Optional[_Union[TranscriptState, _Mapping]] = ..., new_text: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., stop: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., score_bytes: _Optional[int] = ..., next_turn: _Optional[_Union[NextTurn, _Mapping]] = ..., stream: _Optional[bool] = ...) -> None: ...

class NextTurn(_message.Message):
    __slots__ = ("answer_offset_bytes", "messages")
    ANSWER_OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    answer_offset_bytes: int
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, answer_offset_bytes: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class ServerTimings(_message.Message):
    __slots__ = ("queue_s", "compute_s", "reused_tokens", "prefill_tokens", "prefill_s", "decode_tokens", "decode_s")
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    REUSED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECODE_S_FIELD_NUMBER: _ClassVar[int]
    queue_s: float
    compute_s: float
    reused_tokens: int
    prefill_tokens: int
    prefill_s: float
    decode_tokens: int
    decode_s: float
    def __init__(self, queue_s: _Optional[float] = ..., compute_s: _Optional[float] = ..., reused_tokens: _Optional[int] = ..., prefill_tokens: _Optional[int] = ..., prefill_s: _Optional[float] = ..., decode_tokens: _Optional[int] = ..., decode_s: _Optional[float] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("text", "stop_reason", "stop_string", "state", "timings", "mean_logprob", "scored_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_STRING_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    SCORED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    stop_reason: StopReason
    stop_string: str
    state: TranscriptState
    timings: ServerTimings
    mean_logprob: float
    scored_tokens: int
    def __init__(self, text: _Optional[str] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., stop_string: _Optional[str] = ..., state: _Optional[_Union[TranscriptState, _Mapping]] = ..., timings: _Optional[_Union[ServerTimings, _Mapping]] = ..., mean_logprob: _Optional[float] = ..., scored_tokens: _Optional[int] = ...) -> None: ...

class ContextMismatch(_message.Message):
    __slots__ = ("kind", "server_state", "detail")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ContextMismatch.Kind]
        UNKNOWN_CONTEXT: _ClassVar[ContextMismatch.Kind]
        LENGTH_MISMATCH: _ClassVar[ContextMismatch.Kind]
        DIGEST_MISMATCH: _ClassVar[ContextMismatch.Kind]
    KIND_UNSPECIFIED: ContextMismatch.Kind
    UNKNOWN_CONTEXT: ContextMismatch.Kind
    LENGTH_MISMATCH: ContextMismatch.Kind
    DIGEST_MISMATCH: ContextMismatch.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVER_STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: ContextMismatch.Kind
    server_state: TranscriptState
    detail: str
    def __init__(self, kind: _Optional[_Union[ContextMismatch.Kind, str]] = ..., server_state: _Optional[_Union[TranscriptState, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class StepPiece(_message.Message):
    __slots__ = ("text", "index")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    text: str
    index: int
    def __init__(self, text: _Optional[str] = ..., index: _Optional[int] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("grpc_code", "message")
    GRPC_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    grpc_code: int
    message: str
    def __init__(self, grpc_code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("result", "mismatch", "piece", "refused")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    PIECE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    result: StepResult
    mismatch: ContextMismatch
    piece: StepPiece
    refused: Refusal
    def __init__(self, result: _Optional[_Union[StepResult, _Mapping]] = ..., mismatch: _Optional[_Union[ContextMismatch, _Mapping]] = ..., piece: _Optional[_Union[StepPiece, _Mapping]] = ..., refused: _Optional[_Union[Refusal, _Mapping]] = ...) -> None: ...
