"""The cloud service's logic on vLLM, without Triton: a StepRequest in, a StepReply out (asyncio).

Same contract and same refusals as the ONNX engine (`cloud_service.engine`): requests are parsed
and checked by `cloud_service.validation`, contexts are owner-scoped, a stale base gets a typed
`ContextMismatch`, and state is committed only when a call has fully succeeded. What differs is
the KV: vLLM's automatic prefix cache holds it for every context at once (continuous batching,
chunked prefill), so each call sends the whole transcript as token ids and vLLM reuses the cached
blocks; `reused_tokens` is vLLM's own `num_cached_tokens`, `prefill_tokens` the rest of the prompt.

`llm` is anything with vLLM's AsyncLLM `generate(prompt, sampling_params, request_id)` (an async
iterator of RequestOutput) and `abort(request_id)`; `make_sampling` builds vLLM SamplingParams.
Both are injected so the logic is tested without vLLM (tests/vllm/test_vllm_engine_logic.py).

Calls on one context run one after the other (ContextTable.hold); calls on different contexts run
concurrently, one coroutine each, and vLLM batches them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_service.errors import GlimpError, InvalidRequest
from cloud_service.mismatch import held_or_mismatch
from cloud_service.turns import open_turn
from cloud_service.validation import Call, parse_request, validate
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import transcript_state

from .contexts import ContextTable, TableLimits, TextContext

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CancelCheck = Callable[[], bool]
PieceSink = Callable[[pb.StepPiece], None]  # gets a streamed call's text as it is generated
SamplingFactory = Callable[..., Any]

_CANCEL_POLL_S = 0.05  # how often a running call asks Triton whether the client gave up


class RequestCancelled(GlimpError):
    """The client cancelled the call (deadline or stream cancel); nothing was committed."""


class EngineFailed(GlimpError):
    """vLLM failed or aborted the request for a reason of its own (the model may be unhealthy)."""


class Tokenizer(Protocol):
    chat_template: Any

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class PromptFormat:
    """How messages become the prompt text, and the step delimiter (the ONNX manifest's fields)."""

    prompt_template: str = "{question}"  # used when the tokenizer has no chat template
    step_delimiter: str = "\n"
    use_chat_template: bool = True  # the tokenizer's chat template, when it has one


@dataclass(frozen=True)
class EngineSettings:
    window_tokens: int  # the model's context window (vLLM's max_model_len)
    prompt: PromptFormat = PromptFormat()
    table: TableLimits = TableLimits()


@dataclass(frozen=True)
class EngineStats:
    contexts: int
    text_bytes: int
    hits: int
    misses: int
    evictions: dict[str, int]
    mismatches: dict[str, int]
    reused_tokens: int
    prefill_tokens: int
    decode_tokens: int
    running: int


class VllmEngine:
    """Serves StepRequests on a vLLM AsyncLLM; every method runs on the engine's event loop."""

    def __init__(self, llm: Any, tokenizer: Tokenizer, make_sampling: SamplingFactory,
                 settings: EngineSettings, *, clock: Clock = time.monotonic) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.make_sampling = make_sampling
        self.settings = settings
        self.table = ContextTable(settings.table)
        self._clock = clock
        self._mismatches: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._running = 0

    async def handle_bytes(self, data: bytes, *, received_s: float | None = None,
                           is_cancelled: CancelCheck | None = None,
                           on_piece: PieceSink | None = None) -> bytes:
        """Serialized StepRequest -> serialized StepReply (InvalidRequest, RequestCancelled, EngineFailed)."""
        reply = await self.handle(parse_request(data), received_s=received_s, is_cancelled=is_cancelled,
                                  on_piece=on_piece)
        return reply.SerializeToString()

    async def handle(self, request: pb.StepRequest, *, received_s: float | None = None,
                     is_cancelled: CancelCheck | None = None,
                     on_piece: PieceSink | None = None) -> pb.StepReply:
        """The call's final reply; a v2 `stream` write first gives `on_piece` its text as it comes."""
        call = validate(request)
        pieces = _PieceCounter(on_piece) if call.stream and on_piece is not None else None
        async with self.table.hold(call.key):
            started = self._clock()
            queue_s = max(0.0, started - received_s) if received_s is not None else 0.0
            if call.action == pb.CLOSE:
                self.table.remove(call.key)
                closed = pb.StepResult(stop_reason=pb.ABSORBED, state=pb.TranscriptState())
                return pb.StepReply(result=closed)
            opened = open_turn(call, lambda: self.table.get(call.key, started), self._mismatches)
            if isinstance(opened, pb.ContextMismatch):
                return pb.StepReply(mismatch=opened)
            call = opened  # a next turn is served as the create of the continued conversation
            entry = self._resolve(call, started)
            if isinstance(entry, pb.ContextMismatch):
                return pb.StepReply(mismatch=entry)
            self._running += 1
            try:
                result, appended = await self._run(call, entry, is_cancelled, pieces)
            finally:
                self._running -= 1
            # Success: only now does the server's state change.
            if appended:
                entry.commit(appended)
            self.table.put(call.key, entry, self._clock())
            result.state.CopyFrom(transcript_state(entry.view(), call.version))
            result.timings.queue_s = queue_s
            result.timings.compute_s = self._clock() - started
            return pb.StepReply(result=result)

    async def warm_up(self) -> None:
        """One tiny request with prompt logprobs: vLLM's first such call pays seconds of lazy set-up."""
        ids = list(self.tokenizer.encode(self.settings.prompt.prompt_template.format(question="1"),
                                         add_special_tokens=False)) or [0]
        params = self.make_sampling(max_tokens=1, temperature=0.0, top_p=1.0, seed=None, stop=None,
                                    prompt_logprobs=0)
        await self._generate(ids[: max(1, self.settings.window_tokens - 1)], params, None)

    def stats(self) -> EngineStats:
        t = self.table
        return EngineStats(
            contexts=len(t), text_bytes=t.bytes_held, hits=t.hits, misses=t.misses,
            evictions=dict(t.evictions), mismatches=dict(self._mismatches),
            reused_tokens=self._tokens["reused"], prefill_tokens=self._tokens["prefill"],
            decode_tokens=self._tokens["decode"], running=self._running,
        )

    # -- contexts -------------------------------------------------------------------------------

    def _resolve(self, call: Call, now_s: float) -> TextContext | pb.ContextMismatch:
        if call.create:
            return TextContext(tuple((m.role, m.content) for m in call.messages), self._render(call))
        return held_or_mismatch(call, self.table.get(call.key, now_s), self._mismatches)

    def _render(self, call: Call) -> str:
        fmt = self.settings.prompt
        try:
            if fmt.use_chat_template and getattr(self.tokenizer, "chat_template", None):
                return str(self.tokenizer.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in call.messages],
                    tokenize=False, add_generation_prompt=True))
            return fmt.prompt_template.format(question=call.messages[-1].content)
        except Exception as exc:  # jinja TemplateError, KeyError from a bad template: the prompt's fault
            raise InvalidRequest(f"the prompt messages do not fit the model's chat template: {exc}") from exc

    # -- one call -------------------------------------------------------------------------------

    async def _run(self, call: Call, entry: TextContext, is_cancelled: CancelCheck | None,
                   pieces: _PieceCounter | None = None) -> tuple[pb.StepResult, str]:
        """The call's result and the text to commit; raises before anything is committed."""
        full_text = entry.prompt_text + entry.text + call.new_text
        ids = list(self.tokenizer.encode(full_text, add_special_tokens=False))
        window = self.settings.window_tokens
        needed = len(ids) + (1 if call.writes else 0)
        if needed > window:
            raise InvalidRequest(
                f"the context would hold {len(ids)} tokens, but the model's window is {window} tokens"
                + (" and a write needs room for at least one more" if call.writes else "")
                + ": start a new context with a shorter transcript"
            )
        if call.action == pb.SCORE:
            return await self._score(call, full_text, ids, is_cancelled), ""
        result = pb.StepResult(stop_reason=pb.ABSORBED)
        if not call.writes and len(ids) >= window:
            # vLLM cannot take a prompt that fills the window: nothing to warm, commit the text.
            return result, call.new_text
        stops = call.stop_strings
        if call.action == pb.WRITE_STEP:
            stops = (self.settings.prompt.step_delimiter, *stops)
        s = call.sampling
        params = self.make_sampling(
            max_tokens=min(call.max_tokens, window - len(ids)) if call.writes else 1,
            temperature=float(s.temperature), top_p=float(s.top_p), seed=s.seed,
            stop=list(dict.fromkeys(stops)) if call.writes else None,
        )
        out = await self._generate(ids, params, is_cancelled, pieces)
        self._account(result.timings, len(ids), out)
        if not call.writes:  # ABSORB: the prompt is now in vLLM's prefix cache; the token is dropped
            return result, call.new_text
        completion = out.final.outputs[0]
        result.text = out.text
        result.stop_reason, result.stop_string = _stop_reason(completion)
        result.timings.decode_tokens = out.num_tokens
        result.timings.decode_s = out.decode_s
        self._tokens["decode"] += out.num_tokens
        return result, call.new_text + result.text

    async def _score(self, call: Call, full_text: str, ids: list[int],
                     is_cancelled: CancelCheck | None) -> pb.StepResult:
        head = self.tokenizer.encode(full_text[: len(full_text) - call.score_chars], add_special_tokens=False)
        first = max(1, _common_prefix(head, ids))
        if first >= len(ids):
            raise InvalidRequest("the scored text covers no token: score a longer tail")
        if len(ids) >= self.settings.window_tokens:
            raise InvalidRequest(
                f"the context holds {len(ids)} tokens, the whole window: the vllm engine needs one "
                "free position to score it; score a shorter transcript")
        params = self.make_sampling(max_tokens=1, temperature=0.0, top_p=1.0, seed=None, stop=None,
                                    prompt_logprobs=0)
        out = await self._generate(ids, params, is_cancelled)
        rows = out.final.prompt_logprobs
        if rows is None or len(rows) != len(ids):
            raise EngineFailed("vLLM returned no prompt logprobs for a SCORE call")
        logprobs = [float(rows[p][ids[p]].logprob) for p in range(first, len(ids))]
        result = pb.StepResult(stop_reason=pb.ABSORBED, mean_logprob=sum(logprobs) / len(logprobs),
                               scored_tokens=len(logprobs))
        self._account(result.timings, len(ids), out)
        return result

    def _account(self, timings: pb.ServerTimings, prompt_tokens: int, out: _Generated) -> None:
        cached = min(prompt_tokens, int(out.final.num_cached_tokens or 0))
        timings.reused_tokens = cached
        timings.prefill_tokens = prompt_tokens - cached
        timings.prefill_s = out.prefill_s
        self._tokens["reused"] += cached
        self._tokens["prefill"] += prompt_tokens - cached

    async def _generate(self, ids: list[int], params: Any, is_cancelled: CancelCheck | None,
                        pieces: _PieceCounter | None = None) -> _Generated:
        """Run one vLLM request to its end (DELTA outputs), aborting it when the client cancels;
        each non-empty delta goes to `pieces` (vLLM holds back text that may begin a stop string,
        so the pieces add up to the final text)."""
        request_id = uuid.uuid4().hex
        submitted = self._clock()
        last_poll = submitted
        gen = _Generated()
        finished = False
        first_at = submitted
        try:
            async for output in self.llm.generate({"prompt_token_ids": ids}, params, request_id):
                now = self._clock()
                if gen.final is None:
                    gen.prefill_s = now - submitted
                    first_at = now
                gen.final = output
                for completion in output.outputs[:1]:
                    gen.text += completion.text
                    gen.num_tokens += len(completion.token_ids)
                    if pieces is not None and completion.text:
                        pieces.send(completion.text)
                if output.finished:
                    finished = True
                    gen.decode_s = now - first_at
                    break
                if is_cancelled is not None and now - last_poll >= _CANCEL_POLL_S:
                    last_poll = now
                    if is_cancelled():
                        raise RequestCancelled("the client cancelled the call; nothing was committed")
        except BaseException:  # cancelled by the client, by asyncio (unload), or a failure
            if not finished:
                await _abort(self.llm, request_id)
            raise
        if gen.final is None or not finished:
            raise EngineFailed("vLLM ended the request without a final output")
        if gen.final.outputs and gen.final.outputs[0].finish_reason == "abort":
            raise EngineFailed("vLLM aborted the request")
        if is_cancelled is not None and is_cancelled():
            raise RequestCancelled("the client cancelled the call; nothing was committed")
        return gen


class _PieceCounter:
    """Numbers a call's pieces (0, 1, 2, ...) on their way to the sink."""

    def __init__(self, sink: PieceSink) -> None:
        self.sink, self.sent = sink, 0

    def send(self, text: str) -> None:
        self.sink(pb.StepPiece(text=text, index=self.sent))
        self.sent += 1


class _Generated:
    """What one vLLM request produced, accumulated from its DELTA outputs."""

    def __init__(self) -> None:
        self.final: Any = None  # the last RequestOutput (num_cached_tokens, prompt_logprobs)
        self.text = ""
        self.num_tokens = 0
        self.prefill_s = 0.0  # submission to first output: queue + prefill + first token
        self.decode_s = 0.0


async def _abort(llm: Any, request_id: str) -> None:
    try:
        await llm.abort(request_id)
    except Exception:  # the engine may already be gone; the call fails either way
        log.warning("could not abort vLLM request %s", request_id, exc_info=True)


def _stop_reason(completion: Any) -> tuple[pb.StopReason, str]:
    if completion.finish_reason == "length":
        return pb.MAX_TOKENS, ""
    if isinstance(completion.stop_reason, str):
        return pb.STOP_STRING, completion.stop_reason
    return pb.EOS, ""  # stop_reason None (EOS) or an int (a stop token id)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


