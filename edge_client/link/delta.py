"""The delta protocol: a conversation keeps the server's view of its context and sends what is new.

A `TritonConversation` remembers the appended text the server holds and its digest, and sends
only the rest; when the server answers with a mismatch (unknown context, other length or
digest), it resends the whole transcript once with create=true. That one resend is the only
retry here: transport retries, the breaker and offline mode live in `edge_client.link.resilient`.
A closed conversation is done: its CLOSE may still be on its way (`edge_client.link.closer`), so
reusing its context id could have a late close delete what a new call created.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from edge_client.errors import BadInputError, CloudError, ContextMismatchError
from edge_client.link.closer import BackgroundCloser
from edge_client.link.transport import Exchange, PieceSink, TritonLink
from edge_client.llm_backend import CallCost, LLMAction, LLMReply, LLMRequest, empty_score_reply
from onnx_lm import ChatMessage, SamplingParams
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import (
    CONTEXT_ID_MIN_HEX,
    PROTOCOL_VERSION,
    TranscriptDigest,
    TranscriptView,
    transcript_state,
)

log = logging.getLogger(__name__)

_ACTIONS = {
    LLMAction.WRITE_STEP: pb.WRITE_STEP, LLMAction.WRITE_ANSWER: pb.WRITE_ANSWER,
    LLMAction.ABSORB: pb.ABSORB, LLMAction.SCORE: pb.SCORE,
}
_WRITES = (LLMAction.WRITE_STEP, LLMAction.WRITE_ANSWER)
_STOP_REASONS = {
    pb.STOP_STRING: "stop_string", pb.EOS: "eos", pb.MAX_TOKENS: "max_tokens", pb.ABSORBED: "absorbed",
}


class TritonConversation:
    """One context on the server; `call` takes the whole transcript and sends the delta.

    `resend_full` (a benchmark baseline) sends the whole transcript on every call instead, as a
    link without a server-side context must. `closer` sends `close()`'s CLOSE in the background;
    None: `close()` makes the round trip itself (the blocking baseline).
    """

    def __init__(self, link: TritonLink, client_key: bytes, messages: Sequence[ChatMessage], *,
                 resend_full: bool = False, closer: BackgroundCloser | None = None) -> None:
        if not messages:
            raise BadInputError("a conversation needs at least one prompt message")
        self._link = link
        self._client_key = client_key
        self.messages = tuple(messages)
        self.context_id = secrets.token_hex(max(16, CONTEXT_ID_MIN_HEX // 2))  # 128 random bits
        self._created = False
        # The server holds a context we no longer trust (its state differed from ours after a
        # call): the next call re-creates it, and that full resend is a resync like any other.
        self._doubted = False
        self._resend_full = resend_full
        self._closer = closer
        self._closed = False  # closed or discarded: no more calls (a close may still be in flight)
        self._held_text = ""  # the appended text the server holds (as far as we know)
        self._held = TranscriptDigest(self._pairs())
        # A next turn not yet sent: the NextTurn and the base it applies to (see `next_turn`).
        self._turn: tuple[pb.NextTurn, TranscriptView] | None = None

    @property
    def server_view(self) -> TranscriptView:
        """What this side believes the server holds."""
        return self._held.view()

    def call(self, request: LLMRequest, timeout_s: float | None = None) -> LLMReply:
        """Run `request` on the server. Raises CloudError subclasses (see edge_client.errors)."""
        self._refuse_if_closed()
        if (empty := empty_score_reply(request)) is not None:
            return empty
        # A first call creates the context; a transcript that no longer extends what the server
        # holds is resent whole rather than patched.
        resend = (self._resend_full or not self._created
                  or not request.transcript.startswith(self._held_text))
        on_piece = self._piece_sink(request)
        first = self._link.exchange(self._step_request(request, create=resend), timeout_s, on_piece)
        exchanges = [first]
        known = self._created or self._doubted  # a context of ours exists on the server
        resync = first if resend and known and not self._resend_full else None
        if first.reply.WhichOneof("outcome") == "mismatch":
            mismatch = first.reply.mismatch
            log.info("context %s: %s (%s); resending the transcript", self.context_id[:8],
                     pb.ContextMismatch.Kind.Name(mismatch.kind), mismatch.detail)
            resync = self._link.exchange(self._step_request(request, create=True), timeout_s, on_piece)
            exchanges.append(resync)
            if resync.reply.WhichOneof("outcome") != "result":
                raise ContextMismatchError(
                    f"the server refused a full resend of context {self.context_id[:8]}: {resync.reply}"
                )
        result = exchanges[-1].reply.result
        self._advance(request, result, created=resend or resync is not None)
        return _reply(result, exchanges, resync)

    def next_turn(self, answer: str, messages: Sequence[ChatMessage]) -> None:
        """Continue this context with the conversation's next turn; the next call carries it.

        What the server holds becomes the assistant's turn, `answer` (its reply as the user got
        it) and then `messages` follow, and the transcript starts over: only the new messages go
        up (protos: NextTurn). If what the server holds does not end with `answer` (the SLM wrote
        it, a stop string cut it) or a turn is still unsent, the next call re-creates the context
        from the whole conversation instead, under the same id: the server keeps the KV they share.
        """
        self._refuse_if_closed()
        if not messages:
            raise BadInputError("a next turn needs at least one new message")
        base, held = self._held.view(), self._held_text
        self.messages = (*self.messages, ChatMessage("assistant", answer), *messages)
        if self._created and self._turn is None and held.endswith(answer):
            offset = len(held.encode("utf-8")) - len(answer.encode("utf-8"))
            turn = pb.NextTurn(answer_offset_bytes=offset,
                               messages=[pb.ChatMessage(role=m.role, content=m.content) for m in messages])
            self._turn = (turn, base)
        else:
            self._turn, self._created = None, False
        # Our view of the server once the turn is applied: the new conversation, nothing appended.
        self._held_text, self._held = "", TranscriptDigest(self._pairs())

    def push(self, transcript: str) -> None:
        """Nothing to push: the bare link sends the text with the next call (see ResilientConversation)."""

    def close(self) -> None:
        """Free the server's copy; returns at once when a closer sends it (see `BackgroundCloser`).

        Best effort: a failure here only leaves the context to the server's idle TTL. The
        conversation takes no calls afterwards.
        """
        if self._closed:
            return
        known = self._created or self._doubted  # a context of ours exists on the server
        self.discard()
        if not known:
            return
        close = pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=self.context_id,
                               client_key=self._client_key, action=pb.CLOSE)
        if self._closer is not None:
            self._closer.submit(close)
        else:
            send_close(self._link, close)

    def discard(self) -> None:
        """Forget the context without telling the server (it expires there); no calls afterwards."""
        self._closed = True
        self._created = self._doubted = False

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise BadInputError(f"context {self.context_id[:8]} is closed; open a new conversation")

    def _pairs(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.messages]

    def _piece_sink(self, request: LLMRequest) -> PieceSink | None:
        """Where a streamed write's pieces go: the request's watcher, when the cloud streams
        (a decoupled model: the link learnt it on an earlier call) and the call writes text."""
        watch = request.on_text
        if watch is None or not self._link.streamed or request.action not in _WRITES:
            return None
        return lambda piece: watch(piece.text)

    def _step_request(self, request: LLMRequest, *, create: bool) -> pb.StepRequest:
        new_text = request.transcript if create else request.transcript[len(self._held_text):]
        step = pb.StepRequest(
            protocol_version=PROTOCOL_VERSION, context_id=self.context_id, client_key=self._client_key,
            create=create, action=_ACTIONS[request.action], new_text=new_text + request.candidate,
            stop=list(request.stop_strings), sampling=_sampling(request.sampling),
        )
        if request.action in _WRITES:
            step.max_tokens = request.max_tokens
            step.stream = request.on_text is not None and self._link.streamed
        if request.action == LLMAction.SCORE:
            step.score_bytes = len(request.candidate.encode("utf-8"))
        if create:
            step.messages.extend(pb.ChatMessage(role=m.role, content=m.content) for m in self.messages)
        else:
            view = self._held.view()
            if self._turn is not None:  # the turn applies to the state before it
                step.next_turn.CopyFrom(self._turn[0])
                view = self._turn[1]
            step.base.CopyFrom(transcript_state(view, PROTOCOL_VERSION))
        return step

    def _advance(self, request: LLMRequest, result: pb.StepResult, *, created: bool) -> None:
        """Move our view of the server's context to what it now holds, and check it agrees."""
        self._turn = None  # sent and applied, or overtaken by a create
        if created:
            self._held_text, self._held, self._created = "", TranscriptDigest(self._pairs()), True
            self._doubted = False
        if request.action != LLMAction.SCORE:  # SCORE commits nothing
            appended = request.transcript[len(self._held_text):] + result.text
            self._held.extend(appended)
            self._held_text += appended
        view = self._held.view()
        if result.state != transcript_state(view, PROTOCOL_VERSION):
            # Should not happen; the next call re-creates the context rather than build on a doubt.
            log.warning("context %s: the server's state differs from ours after a call", self.context_id[:8])
            self._created, self._doubted = False, True


def send_close(link: TritonLink, close: pb.StepRequest) -> None:
    """One CLOSE round trip; a failure is only logged (the server's idle TTL frees the context)."""
    try:
        link.exchange(close)
    except CloudError as exc:
        log.debug("closing context %s failed: %s", close.context_id[:8], exc)


def _sampling(params: SamplingParams) -> pb.Sampling:
    sampling = pb.Sampling(temperature=params.temperature, top_p=params.top_p)
    if params.seed is not None:
        sampling.seed = params.seed
    return sampling


def _reply(result: pb.StepResult, exchanges: list[Exchange], resync: Exchange | None) -> LLMReply:
    timings = [e.reply.result.timings for e in exchanges if e.reply.WhichOneof("outcome") == "result"]
    cost = CallCost(
        bytes_up=sum(e.bytes_up for e in exchanges), bytes_down=sum(e.bytes_down for e in exchanges),
        round_trip_s=sum(e.round_trip_s for e in exchanges),
        queue_s=sum(t.queue_s for t in timings), compute_s=sum(t.compute_s for t in timings),
        prefill_s=sum(t.prefill_s for t in timings), decode_s=sum(t.decode_s for t in timings),
        prefill_tokens=sum(t.prefill_tokens for t in timings),
        decode_tokens=sum(t.decode_tokens for t in timings),
        resync_bytes_up=resync.bytes_up if resync else 0, resync_s=resync.round_trip_s if resync else 0.0,
        resynced=resync is not None,
        first_text_s=sum(e.round_trip_s for e in exchanges[:-1]) + exchanges[-1].first_text_s,
    )
    return LLMReply(
        text=result.text, stop_reason=_STOP_REASONS.get(result.stop_reason, "absorbed"),
        stop_string=result.stop_string or None, cost=cost,
        mean_logprob=result.mean_logprob if result.scored_tokens else None,
    )
