"""Names, limits and the transcript digest that both sides of the contract must agree on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from protos import edge_cloud_v1_pb2 as pb

# Version 2 carries the transcript digest as 16 raw bytes (TranscriptState.digest_raw) instead of
# 64 hex characters, so a delta is smaller than a full resend even on short transcripts. A server
# answers each request in the version it came in: a version-1 client is served exactly as before.
PROTOCOL_VERSION = 2  # what this code sends
SUPPORTED_PROTOCOL_VERSIONS = (1, 2)  # what a server answers
RAW_DIGEST_BYTES = 16  # the sha256 prefix version 2 sends: 128 bits, as unguessable as a context id
MODEL_NAME = "glimp_llm"  # the Triton model that serves the contract
REQUEST_TENSOR = "REQUEST"  # BYTES [1]: a serialized StepRequest
REPLY_TENSOR = "REPLY"  # BYTES [1]: a serialized StepReply

CONTEXT_ID_MIN_HEX = 32  # 128 bits: context ids are unguessable
MAX_MAX_TOKENS = 8192  # one call may generate at most this many tokens
MAX_REQUEST_TEXT_BYTES = 1 << 20  # 1 MiB of text per call (messages + new_text)
AUTH_HEADER = "x-edge-token"  # Triton restricted-protocol header carrying the shared edge token
GRPC_AUTH_METADATA_KEY = f"triton-grpc-protocol-{AUTH_HEADER}"  # the gRPC metadata key a client sends
# Every call of a conversation carries its context id here, so an L7 balancer can hash on it and
# keep the context on the replica holding its KV. Routing only: the server never trusts it (the
# StepRequest's context id and client key decide), and it carries no client key.
CONTEXT_METADATA_KEY = "x-glimp-context"


def canonical_prompt(messages: Iterable[tuple[str, str]]) -> bytes:
    """The prompt as hashed by both sides: compact JSON of [role, content] pairs."""
    pairs = [[role, content] for role, content in messages]
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class TranscriptView:
    """A side's view of a context: appended-text length and digest (the contract's TranscriptState)."""

    length_bytes: int
    digest: str  # hex: the full sha256 (held state) or the prefix a version-2 client sent

    @property
    def raw(self) -> bytes:
        """The version-2 wire form of the digest: its first RAW_DIGEST_BYTES bytes."""
        return bytes.fromhex(self.digest)[:RAW_DIGEST_BYTES]

    def agrees_with(self, held: TranscriptView, version: int) -> bool:
        """Whether this claim (from a client of `version`) names the `held` state."""
        width = len(held.digest) if version == 1 else 2 * RAW_DIGEST_BYTES
        return self.length_bytes == held.length_bytes and self.digest == held.digest[:width]


class TranscriptDigest:
    """Running sha256 over the canonical prompt and the text appended after it."""

    def __init__(self, messages: Iterable[tuple[str, str]]) -> None:
        self._hasher = hashlib.sha256(canonical_prompt(messages) + b"\x00")
        self.length_bytes = 0

    def extend(self, text: str) -> None:
        data = text.encode("utf-8")
        self._hasher.update(data)
        self.length_bytes += len(data)

    def view(self) -> TranscriptView:
        return TranscriptView(self.length_bytes, self._hasher.hexdigest())

    def copy(self) -> TranscriptDigest:
        twin = TranscriptDigest.__new__(TranscriptDigest)
        twin._hasher = self._hasher.copy()
        twin.length_bytes = self.length_bytes
        return twin


def transcript_state(view: TranscriptView, version: int) -> pb.TranscriptState:
    """`view` as the TranscriptState a reply of `version` carries (hex in 1, raw bytes in 2)."""
    if version == 1:
        return pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest)
    return pb.TranscriptState(length_bytes=view.length_bytes, digest_raw=view.raw)


def claimed_view(state: pb.TranscriptState, version: int) -> TranscriptView:
    """The TranscriptView a `version` TranscriptState names (hex digest either way)."""
    digest = state.digest if version == 1 else state.digest_raw.hex()
    return TranscriptView(state.length_bytes, digest)
