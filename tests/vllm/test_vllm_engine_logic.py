"""The vLLM engine's contract logic with a scripted stand-in for AsyncLLM (no vLLM, no Triton).

Runs in any project environment. What vLLM itself does is checked against the real thing in
test_vllm_triton.py; here: owner scoping, typed mismatches, commit only on success, cancellation,
the window refusal, stop reasons, token accounting from num_cached_tokens, SCORE, and that calls on
one context are serialized while different contexts run concurrently.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from cloud_service.errors import InvalidRequest
from cloud_service.vllm.engine import (
    EngineFailed,
    EngineSettings,
    PromptFormat,
    RequestCancelled,
    VllmEngine,
)
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptDigest


class CharTokenizer:
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        raise AssertionError("no chat template")


@dataclass
class FakeLLM:
    """Answers every prompt with `reply` (cut at a stop string, like vLLM), in 1-char DELTA pieces."""

    reply: str = "52=59-7\n312"
    eos: bool = False  # end with EOS after `reply` instead of running on
    cached: int = 0  # num_cached_tokens reported
    fail_after: int | None = None  # raise after this many pieces
    delay_s: float = 0.0
    prompts: list[list[int]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    active: int = 0
    peak: int = 0

    async def generate(self, prompt: dict[str, list[int]], params: Any, request_id: str) -> Any:
        ids = prompt["prompt_token_ids"]
        self.prompts.append(ids)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            text, reason, stop_reason = self.reply, "length", None
            for stop in params.stop or []:
                if stop in text:
                    text, reason, stop_reason = text[: text.index(stop)], "stop", stop
                    break
            else:
                if self.eos:
                    reason = "stop"
            if reason == "length":
                text = text[: params.max_tokens]
            text = text[: params.max_tokens]
            pieces = list(text) or [""]
            for i, piece in enumerate(pieces):
                if self.fail_after is not None and i >= self.fail_after:
                    raise RuntimeError("engine died")
                await asyncio.sleep(self.delay_s)
                last = i == len(pieces) - 1
                completion = SimpleNamespace(text=piece, token_ids=[1] if piece else [],
                                             finish_reason=reason if last else None,
                                             stop_reason=stop_reason if last else None)
                rows = None
                if params.prompt_logprobs is not None:
                    rows = [None] + [{t: SimpleNamespace(logprob=-0.5)} for t in ids[1:]]
                yield SimpleNamespace(outputs=[completion], finished=last, num_cached_tokens=self.cached,
                                      prompt_logprobs=rows)
        finally:
            self.active -= 1

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def sampling(**kwargs: Any) -> Any:
    kwargs.setdefault("prompt_logprobs", None)
    return SimpleNamespace(**kwargs)


def make_engine(llm: FakeLLM, window: int = 128) -> VllmEngine:
    return VllmEngine(llm, CharTokenizer(), sampling,
                      EngineSettings(window_tokens=window,
                                     prompt=PromptFormat(prompt_template="Q:{question}\n")))


KEY = os.urandom(32)
CID = os.urandom(16).hex()
QUESTION = "59-7*6+74"


def create(action: Any = pb.WRITE_STEP, key: bytes = KEY, cid: str = CID, **kw: Any) -> pb.StepRequest:
    return pb.StepRequest(protocol_version=kw.pop("protocol_version", 1), context_id=cid, client_key=key,
                          create=True, messages=[pb.ChatMessage(role="user", content=QUESTION)],
                          action=action, max_tokens=kw.pop("max_tokens", 32), **kw)


def follow(state: pb.TranscriptState, new_text: str, action: Any = pb.WRITE_STEP, key: bytes = KEY,
           cid: str = CID, **kw: Any) -> pb.StepRequest:
    if action in (pb.WRITE_STEP, pb.WRITE_ANSWER):
        kw.setdefault("max_tokens", 32)
    return pb.StepRequest(protocol_version=kw.pop("protocol_version", 1), context_id=cid, client_key=key,
                          base=state, new_text=new_text, action=action, **kw)


def expected_state(appended: str) -> tuple[int, str]:
    digest = TranscriptDigest([("user", QUESTION)])
    digest.extend(appended)
    view = digest.view()
    return view.length_bytes, view.digest


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_create_write_step_then_delta_commits_text_and_digest() -> None:
    llm = FakeLLM(cached=0)
    engine = make_engine(llm)

    async def scenario() -> None:
        first = (await engine.handle(create())).result
        assert first.text == "52=59-7" and first.stop_reason == pb.STOP_STRING and first.stop_string == "\n"
        assert (first.state.length_bytes, first.state.digest) == expected_state("52=59-7")
        assert first.timings.prefill_tokens == len("Q:59-7*6+74\n") and first.timings.reused_tokens == 0
        assert first.timings.decode_tokens == 7
        llm.cached = 12
        second = (await engine.handle(follow(first.state, "\n"))).result
        assert (second.state.length_bytes, second.state.digest) == expected_state("52=59-7\n52=59-7")
        assert llm.prompts[-1] == [ord(c) for c in "Q:59-7*6+74\n52=59-7\n"]
        assert (second.timings.reused_tokens, second.timings.prefill_tokens) == (12, 8)

    run(scenario())


def test_a_version_2_call_names_and_gets_its_state_in_16_raw_bytes() -> None:
    engine = make_engine(FakeLLM())

    async def scenario() -> None:
        first = (await engine.handle(create(protocol_version=2))).result
        length, digest = expected_state("52=59-7")
        assert (first.state.length_bytes, first.state.digest, first.state.digest_raw) == (
            length, "", bytes.fromhex(digest)[:16])
        wrong = pb.TranscriptState(length_bytes=length, digest_raw=b"\0" * 16)
        refused = await engine.handle(follow(wrong, "\n", protocol_version=2))
        assert refused.mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
        second = (await engine.handle(follow(first.state, "\n", protocol_version=2))).result
        assert second.state.digest_raw == bytes.fromhex(expected_state("52=59-7\n52=59-7")[1])[:16]

    run(scenario())


def test_a_streamed_write_gives_its_pieces_and_a_cancel_after_them_commits_nothing() -> None:
    engine = make_engine(FakeLLM())
    pieces: list[pb.StepPiece] = []

    async def scenario() -> None:
        first = (await engine.handle(create(protocol_version=2, stream=True), on_piece=pieces.append)).result
        assert [(p.index, p.text) for p in pieces] == list(enumerate("52=59-7"))
        assert first.text == "52=59-7"
        pieces.clear()

        def cancel_after_three() -> bool:
            return len(pieces) >= 3

        with pytest.raises(RequestCancelled):
            await engine.handle(follow(first.state, "\n", protocol_version=2, stream=True),
                                is_cancelled=cancel_after_three, on_piece=pieces.append)
        assert len(pieces) >= 3
        # Nothing committed: the same base still continues the context.
        again = await engine.handle(follow(first.state, "\n", protocol_version=2))
        assert again.result.state.length_bytes == len("52=59-7\n52=59-7")

    run(scenario())
    with pytest.raises(InvalidRequest, match="stream is version 2's field"):
        run(engine.handle(create(stream=True, cid=os.urandom(16).hex())))


def test_mismatches_are_typed_and_change_nothing() -> None:
    engine = make_engine(FakeLLM())

    async def scenario() -> None:
        state = (await engine.handle(create())).result.state
        unknown = await engine.handle(follow(state, "\n", cid=os.urandom(16).hex()))
        assert unknown.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
        other_owner = await engine.handle(follow(state, "\n", key=os.urandom(32)))
        assert other_owner.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
        length = await engine.handle(follow(pb.TranscriptState(length_bytes=3, digest=state.digest), "\n"))
        assert length.mismatch.kind == pb.ContextMismatch.LENGTH_MISMATCH
        assert length.mismatch.server_state == state
        digest = await engine.handle(follow(pb.TranscriptState(length_bytes=state.length_bytes,
                                                               digest="0" * 64), "\n"))
        assert digest.mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
        ok = await engine.handle(follow(state, "\n", action=pb.ABSORB))
        assert ok.result.stop_reason == pb.ABSORBED and ok.result.state.length_bytes == state.length_bytes + 1
        assert engine.stats().mismatches == {"UNKNOWN_CONTEXT": 2, "LENGTH_MISMATCH": 1, "DIGEST_MISMATCH": 1}

    run(scenario())


def test_a_failed_or_cancelled_call_commits_nothing_and_aborts_vllm() -> None:
    llm = FakeLLM(reply="52=59-7\n")
    engine = make_engine(llm)

    async def scenario() -> None:
        state = (await engine.handle(create())).result.state
        llm.fail_after = 2
        with pytest.raises(RuntimeError, match="engine died"):
            await engine.handle(follow(state, "\n"))
        llm.fail_after = None
        with pytest.raises(RequestCancelled):
            await engine.handle(follow(state, "\n"), is_cancelled=lambda: True)
        assert llm.aborted, "a cancelled call must abort its vLLM request"
        again = await engine.handle(follow(state, "\n"))  # the old base still matches
        assert again.HasField("result")

    run(scenario())


def test_a_failed_create_keeps_the_old_context() -> None:
    llm = FakeLLM()
    engine = make_engine(llm)

    async def scenario() -> None:
        state = (await engine.handle(create())).result.state
        llm.fail_after = 0
        with pytest.raises(RuntimeError):
            await engine.handle(create())
        llm.fail_after = None
        assert (await engine.handle(follow(state, "\n", action=pb.ABSORB))).HasField("result")

    run(scenario())


def test_window_refusal_matches_the_onnx_engine() -> None:
    engine = make_engine(FakeLLM(), window=16)

    async def scenario() -> None:
        state = (await engine.handle(create(max_tokens=1))).result.state
        with pytest.raises(InvalidRequest, match=r"the context would hold 17 tokens, but the model's "
                                                 r"window is 16 tokens and a write needs room for at "
                                                 r"least one more"):
            await engine.handle(follow(state, "x" * 4))

    run(scenario())


def test_max_tokens_and_eos_and_write_answer() -> None:
    llm = FakeLLM(reply="A:386", eos=True)
    engine = make_engine(llm)

    async def scenario() -> None:
        answer = (await engine.handle(create(action=pb.WRITE_ANSWER))).result
        assert answer.text == "A:386" and answer.stop_reason == pb.EOS
        llm.eos = False
        capped = (await engine.handle(follow(answer.state, "\n", max_tokens=2))).result
        assert capped.text == "A:" and capped.stop_reason == pb.MAX_TOKENS

    run(scenario())


def test_close_forgets_and_score_commits_nothing() -> None:
    engine = make_engine(FakeLLM())

    async def scenario() -> None:
        state = (await engine.handle(create())).result.state
        scored = (await engine.handle(follow(state, "\nA:386", action=pb.SCORE, score_bytes=3))).result
        assert scored.scored_tokens == 3 and math.isclose(scored.mean_logprob, -0.5)
        assert scored.state == state
        closed = await engine.handle(follow(pb.TranscriptState(), "", action=pb.CLOSE))
        assert closed.result.stop_reason == pb.ABSORBED
        gone = await engine.handle(follow(state, "\n"))
        assert gone.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT

    run(scenario())


def test_one_context_is_serialized_and_many_contexts_run_together() -> None:
    llm = FakeLLM(delay_s=0.005)
    engine = make_engine(llm)

    async def scenario() -> None:
        state = (await engine.handle(create())).result.state
        same = await asyncio.gather(*(engine.handle(follow(state, "\n")) for _ in range(3)))
        assert sum(r.HasField("result") for r in same) == 1  # the others see the first one's commit
        kinds = [r.mismatch.kind for r in same if r.HasField("mismatch")]
        assert kinds == [pb.ContextMismatch.LENGTH_MISMATCH] * 2
        llm.peak = 0
        many = await asyncio.gather(*(engine.handle(create(cid=os.urandom(16).hex())) for _ in range(8)))
        assert all(r.result.text == "52=59-7" for r in many)
        assert llm.peak == 8

    run(scenario())


def test_refusals_reuse_the_validation_messages() -> None:
    engine = make_engine(FakeLLM())
    with pytest.raises(InvalidRequest, match="protocol_version 3 is not supported"):
        run(engine.handle(pb.StepRequest(protocol_version=3)))
    with pytest.raises(InvalidRequest, match="max_tokens must be in 1..8192 for a write"):
        run(engine.handle(create(max_tokens=0)))


def test_an_engine_abort_is_a_failure_not_a_reply() -> None:
    class Aborting(FakeLLM):
        async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
            yield SimpleNamespace(outputs=[SimpleNamespace(text="", token_ids=[], finish_reason="abort",
                                                           stop_reason=None)],
                                  finished=True, num_cached_tokens=0, prompt_logprobs=None)

    with pytest.raises(EngineFailed):
        run(make_engine(Aborting()).handle(create()))
