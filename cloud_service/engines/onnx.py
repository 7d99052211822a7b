"""The cloud service's logic, without Triton: a StepRequest in, a StepReply out.

Contexts are keyed by (sha256(client_key), context_id): another credential's context is simply
unknown. Each holds the prompt messages, the appended text and its digest (the *committed*
state), an `LMContext` (the KV cache) and its own random stream (created at its first write
from the call's seed, then continued call after call, as the in-process LLM does per
conversation; a failed call puts the stream back where it was). The KV is only a cache,
brought in line with the committed text by `LMContext.sync` (longest common token prefix), so a
failed or cancelled call never changes what the client and server agree on: state is committed
only at the very end.

The model's view is its own prompt + the committed text; before an answer it closes its own
thinking block if that view is still inside one (`TextCodec.closing_for_answer`): the edge's
transcript may come from a model with other markers, or none. The closing is not committed.

`model.py` (the Triton adapter) maps `InvalidRequest` to INVALID_ARG and `RequestCancelled` to
CANCELLED; the benchmark and unit tests drive the engine in process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloud_service.engines.context_store import ContextStore, StoreLimits, StoreStats
from cloud_service.errors import ContextTooLarge, InvalidRequest
from cloud_service.mismatch import held_or_mismatch
from cloud_service.serving_config import ServingConfig
from cloud_service.turns import open_turn
from cloud_service.validation import Call, parse_request, validate
from glimp_common.errors import GlimpError
from onnx_lm import (
    LLM_STREAM,
    CausalLM,
    ChatMessage,
    LMContext,
    SamplingParams,
    SessionConfig,
    StopCriteria,
    StopReason,
    decode_until,
    make_rng,
)
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptDigest, TranscriptView, transcript_state

__all__ = ["Engine", "EngineConfig", "EngineStats", "InvalidRequest", "RequestCancelled"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CancelCheck = Callable[[], bool]

_STOP_REASONS = {
    StopReason.STOP_STRING: pb.STOP_STRING, StopReason.EOS: pb.EOS, StopReason.MAX_TOKENS: pb.MAX_TOKENS,
}
_CANCEL_POLL_S = 0.05  # how often a long decode asks Triton whether the client gave up


class RequestCancelled(GlimpError):
    """The client cancelled the call (deadline or stream cancel); nothing was committed."""


@dataclass(frozen=True)
class EngineConfig:
    """Limits of the per-context cache (defaults: cloud_service.serving_config.ServingConfig)."""

    cache_budget_bytes: int = ServingConfig.cache_budget_bytes  # KV + text of every context together
    idle_ttl_s: float = ServingConfig.idle_ttl_s  # a context unused this long is dropped

    def __post_init__(self) -> None:
        StoreLimits(self.cache_budget_bytes, self.idle_ttl_s)  # validates both


@dataclass(frozen=True)
class EngineStats:
    """Counters for the metrics endpoint."""

    store: StoreStats
    mismatches: dict[str, int] = field(default_factory=dict)  # kind -> count
    reused_tokens: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0


class ServerContext:
    """One conversation as the server holds it: prompt, committed text and digest, and the KV."""

    def __init__(self, messages: tuple[ChatMessage, ...], prompt_text: str, lm_ctx: LMContext) -> None:
        self.messages = tuple((m.role, m.content) for m in messages)  # for a next turn (cloud_service.turns)
        self.prompt_text = prompt_text
        self.text = ""  # appended text committed so far
        self.digest = TranscriptDigest((m.role, m.content) for m in messages)
        self.lm_ctx = lm_ctx
        self.rng: np.random.Generator | None = None  # created at the first write, then continued
        self._rng_seed: int | None = None  # the seed `rng` was made from
        self._text_bytes = len(prompt_text.encode("utf-8"))

    @property
    def nbytes(self) -> int:
        """KV bytes + text bytes + token ids (8 bytes each, as the int64s they become)."""
        return self.lm_ctx.nbytes + self._text_bytes + 8 * self.lm_ctx.length

    def rng_for(self, sampling: SamplingParams) -> np.random.Generator:
        """The context's one random stream: stream LLM_STREAM of the call's seed, continued call after
        call; a call under another seed than the stream's starts that seed's stream."""
        if self.rng is None or sampling.seed != self._rng_seed:
            self.rng, self._rng_seed = make_rng(sampling, LLM_STREAM), sampling.seed
        return self.rng

    def take_stream(self, old: ServerContext) -> None:
        """Continue `old`'s random stream: the same conversation, resent under its id."""
        self.rng, self._rng_seed = old.rng, old._rng_seed

    def view(self) -> TranscriptView:
        return self.digest.view()

    def commit(self, appended: str) -> None:
        digest = self.digest.copy()
        digest.extend(appended)
        self.text, self.digest = self.text + appended, digest
        self._text_bytes += len(appended.encode("utf-8"))


class Engine:
    """Serves StepRequests for one model; thread-safe (one call runs at a time)."""

    def __init__(self, lm: CausalLM, config: EngineConfig | None = None, *, clock: Clock = time.monotonic):
        self.lm = lm
        self.config = config or EngineConfig()
        self.store: ContextStore[ServerContext] = ContextStore(
            StoreLimits(self.config.cache_budget_bytes, self.config.idle_ttl_s)
        )
        self._clock = clock
        # Every token stands for at most this many bytes of text, so a text of B bytes holds at
        # least B / _max_token_bytes tokens: too long for the window is known before tokenizing.
        self._max_token_bytes = max_token_bytes(lm)
        self._lock = threading.Lock()
        self._mismatches: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()

    @classmethod
    def load(cls, model_dir: Path | str, config: EngineConfig | None = None,
             session: SessionConfig | None = None) -> Engine:
        """Load an exported model folder (see `CausalLM.load` for the errors)."""
        return cls(CausalLM.load(model_dir, session), config)

    def handle_bytes(self, data: bytes, *, received_s: float | None = None,
                     is_cancelled: CancelCheck | None = None) -> bytes:
        """Serialized StepRequest -> serialized StepReply; InvalidRequest when it is not acceptable."""
        reply = self.handle(parse_request(data), received_s=received_s, is_cancelled=is_cancelled)
        return reply.SerializeToString()

    def handle(self, request: pb.StepRequest, *, received_s: float | None = None,
               is_cancelled: CancelCheck | None = None) -> pb.StepReply:
        """Run one call. `received_s` (engine clock) lets the wait for the engine count as queue time.

        Raises InvalidRequest for a request the service refuses, RequestCancelled when
        `is_cancelled` turns true mid-call. Neither changes any committed state.
        """
        call = validate(request)
        self._check_bytes(_text_bytes(call), call)  # before the lock: the new text alone too long
        with self._lock:
            started = self._clock()
            queue_s = max(0.0, started - received_s) if received_s is not None else 0.0
            self.store.expire(started)
            if call.action == pb.CLOSE:
                return self._close(call)
            opened = open_turn(call, lambda: self.store.get(call.key, started), self._mismatches)
            if isinstance(opened, pb.ContextMismatch):
                return pb.StepReply(mismatch=opened)
            call = opened  # a next turn is served as the create of the continued conversation
            entry = self._resolve(call, started)
            if isinstance(entry, pb.ContextMismatch):
                return pb.StepReply(mismatch=entry)
            full_text = self._model_view(entry, call)
            room = self._room_after(full_text, call)
            try:
                result = self._run(call, entry, full_text, room, is_cancelled)
            except InvalidRequest:
                raise  # refused before the KV was touched
            except BaseException:
                entry.lm_ctx.reset()  # a half-run KV is dropped rather than trusted
                raise
            finally:
                self.store.settle(call.key)
            if call.create:
                self.store.put(call.key, entry, started)
            result.timings.queue_s = queue_s
            result.timings.compute_s = self._clock() - started
            return pb.StepReply(result=result)

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                store=self.store.stats(), mismatches=dict(self._mismatches),
                reused_tokens=self._tokens["reused"], prefill_tokens=self._tokens["prefill"],
                decode_tokens=self._tokens["decode"],
            )

    def _close(self, call: Call) -> pb.StepReply:
        self.store.remove(call.key)
        return pb.StepReply(result=pb.StepResult(stop_reason=pb.ABSORBED, state=pb.TranscriptState()))

    def _resolve(self, call: Call, now_s: float) -> ServerContext | pb.ContextMismatch:
        """The context to work on: a new one (create) or the stored one if the client's view matches."""
        if call.create:
            return self._new_context(call)
        return held_or_mismatch(call, self.store.get(call.key, now_s), self._mismatches)

    def _new_context(self, call: Call) -> ServerContext:
        try:
            prompt = self.lm.tokenizer.render_prompt(list(call.messages))
        except GlimpError as exc:
            raise InvalidRequest(f"the prompt messages do not fit the model's chat template: {exc}") from exc
        # Re-creating a context under the same id keeps its KV: the resend shares the prompt prefix.
        old = self.store.peek(call.key)
        if old is None:
            return ServerContext(call.messages, prompt, LMContext(self.lm))
        entry = ServerContext(call.messages, prompt, old.lm_ctx)
        entry.take_stream(old)
        return entry

    def _model_view(self, entry: ServerContext, call: Call) -> str:
        """The text the model continues: its prompt, the transcript, and before an answer its own
        closing of a thinking block the transcript left open (not committed)."""
        text = entry.prompt_text + entry.text + call.new_text
        if call.action == pb.WRITE_ANSWER:
            text += self.lm.tokenizer.closing_for_answer(text)
        return text

    def _run(self, call: Call, entry: ServerContext, full_text: str, room: int,
             is_cancelled: CancelCheck | None) -> pb.StepResult:
        if call.action == pb.SCORE:
            return self._score(call, entry, full_text)
        timings = pb.ServerTimings()
        t0 = self._clock()
        synced = entry.lm_ctx.sync(full_text)
        timings.prefill_s = self._clock() - t0
        timings.reused_tokens, timings.prefill_tokens = synced.reused_tokens, synced.prefill_tokens
        self._count(reused=synced.reused_tokens, prefill=synced.prefill_tokens)
        result = pb.StepResult(stop_reason=pb.ABSORBED)
        if call.writes:
            rng = entry.rng_for(call.sampling)
            drawn_from = rng.bit_generator.state
            try:
                gen = decode_until(entry.lm_ctx, call.sampling, self._stops(call, room), rng,
                                   on_text=_cancel_guard(is_cancelled, self._clock))
            except BaseException:
                rng.bit_generator.state = drawn_from  # nothing committed: the retry draws the same
                raise
            result.text, result.stop_reason = gen.text, _STOP_REASONS[gen.stop_reason]
            result.stop_string = gen.stop_string or ""
            timings.decode_tokens, timings.decode_s = gen.num_tokens, gen.decode_s
            self._count(decode=gen.num_tokens)
        entry.commit(call.new_text + result.text)
        result.timings.CopyFrom(timings)
        result.state.CopyFrom(transcript_state(entry.view(), call.version))
        return result

    def _score(self, call: Call, entry: ServerContext, full_text: str) -> pb.StepResult:
        t0 = self._clock()
        try:
            score = entry.lm_ctx.score_tail(full_text, call.score_chars)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        self._count(reused=score.reused_tokens, prefill=score.prefill_tokens)
        timings = pb.ServerTimings(reused_tokens=score.reused_tokens, prefill_tokens=score.prefill_tokens,
                                   prefill_s=self._clock() - t0)
        return pb.StepResult(stop_reason=pb.ABSORBED, state=transcript_state(entry.view(), call.version),
                             timings=timings, mean_logprob=score.mean_logprob,
                             scored_tokens=score.scored_tokens)

    def _check_bytes(self, text_bytes: int, call: Call) -> None:
        """InvalidRequest when `text_bytes` of text cannot fit the window, however it tokenizes.

        Exact and O(1): at least text_bytes / _max_token_bytes tokens. Checked before any
        tokenization, because tokenizing a long run without spaces is slow (seconds per MiB),
        and every other request waits meanwhile (one model instance runs one call at a time).
        """
        window = self.lm.manifest.max_context_tokens
        limit = window * self._max_token_bytes
        if text_bytes > limit:
            raise InvalidRequest(
                f"the context would hold {text_bytes} bytes of text, at least "
                f"{-(-text_bytes // self._max_token_bytes)} tokens (no token of this model is longer than "
                f"{self._max_token_bytes} bytes), but the model's window is {window} tokens: "
                + ("send a shorter prompt" if call.create
                   else "start a new context with a shorter transcript")
            )

    def _room_after(self, full_text: str, call: Call) -> int:
        """Tokens the window and the cache budget leave after `full_text`; InvalidRequest (or
        ContextTooLarge) when it does not fit."""
        window = self.lm.manifest.max_context_tokens
        text_bytes = len(full_text.encode("utf-8"))
        self._check_bytes(text_bytes, call)
        used = len(self.lm.tokenizer.encode(full_text))
        needed = used + (1 if call.writes else 0)
        if needed > window:
            raise InvalidRequest(
                f"the context would hold {used} tokens, but the model's window is {window} tokens"
                + (" and a write needs room for at least one more" if call.writes else "")
                + ": start a new context with a shorter transcript"
            )
        return min(window - used, self._budget_room(text_bytes, used, call))

    def _budget_room(self, text_bytes: int, used: int, call: Call) -> int:
        """Tokens the cache budget leaves a context of `used` tokens; ContextTooLarge when it has none.

        One context larger than the whole budget would be evicted after every call (a silent full
        resend and prefill each step), so it is refused up front, as the window refuses, and a write
        near the limit stops early (MAX_TOKENS) instead.
        """
        budget = self.config.cache_budget_bytes
        per_token = self.lm.manifest.kv.bytes_per_token() + 8  # KV + the int64 id (ServerContext.nbytes)
        held = text_bytes + used * per_token
        room = (budget - held) // (per_token + self._max_token_bytes)  # each new token adds its text too
        if held > budget or (call.writes and room < 1):
            raise ContextTooLarge(
                f"this context would need {held} bytes of cache ({used} tokens), "
                + ("and a write needs room for one more, " if held <= budget else "")
                + f"more than the server's whole cache budget of {budget} bytes (glimp serve "
                "--cache-budget-mb): start a new context with a shorter transcript, or raise the budget"
            )
        return max(0, room)

    def _stops(self, call: Call, room: int) -> StopCriteria:
        stops = call.stop_strings
        if call.action == pb.WRITE_STEP:
            stops = (self.lm.manifest.step_delimiter, *stops)
        # At the end of the window a write stops early (reported as MAX_TOKENS).
        return StopCriteria(tuple(dict.fromkeys(stops)), max_tokens=min(call.max_tokens, room))

    def _count(self, **amounts: int) -> None:
        self._tokens.update(amounts)


def max_token_bytes(lm: CausalLM) -> int:
    """The most bytes of text one token of `lm` stands for (+1: a tokenizer may drop a leading
    space when it decodes a lone token, e.g. SentencePiece's "▁"). Decodes the vocabulary once."""
    codec = lm.tokenizer
    return 1 + max(len(codec.token_text(i).encode("utf-8")) for i in range(codec.vocab_size))


def _text_bytes(call: Call) -> int:
    return len(call.new_text.encode("utf-8")) + sum(len(m.content.encode("utf-8")) for m in call.messages)



def _cancel_guard(is_cancelled: CancelCheck | None, clock: Clock) -> Callable[[str], None] | None:
    """An `on_text` callback that aborts the decode once the client has cancelled."""
    if is_cancelled is None:
        return None
    last = [clock()]

    def check(_: str) -> None:
        now = clock()
        if now - last[0] >= _CANCEL_POLL_S:
            last[0] = now
            if is_cancelled():
                raise RequestCancelled("the client cancelled the call; nothing was committed")

    return check
