"""A conversation's next turn on the held context (StepRequest.next_turn), the ONNX engine in process.

On the tiny Qwen3: its chat template renders earlier turns (and drops their reasoning), so the
continued prompt shares a long token prefix with what the context held.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cloud_helpers import MESSAGES, new_ids, step_request

from cloud_service.engines.onnx import Engine, EngineConfig
from cloud_service.errors import InvalidRequest
from onnx_lm import CausalLM, ChatMessage
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptDigest

PB_MESSAGES = [pb.ChatMessage(role=m.role, content=m.content) for m in MESSAGES]
REASONING, ANSWER = "two and two.</think>", "4"
NEW = [pb.ChatMessage(role="user", content="and then?")]
CONTINUED = (*MESSAGES, ChatMessage("assistant", ANSWER), ChatMessage("user", "and then?"))


@pytest.fixture(scope="module")
def lm(tiny_qwen3_dir: Path) -> CausalLM:
    return CausalLM.load(tiny_qwen3_dir)


@pytest.fixture()
def engine(lm: CausalLM) -> Engine:
    return Engine(lm, EngineConfig(cache_budget_bytes=64 << 20, idle_ttl_s=60.0))


def first_turn(engine: Engine, ids: tuple[str, bytes]) -> pb.TranscriptState:
    """A context holding one turn: reasoning, then the answer."""
    reply = engine.handle(step_request(*ids, create=True, messages=PB_MESSAGES, new_text=REASONING + ANSWER,
                                       action=pb.ABSORB))
    return reply.result.state


def next_turn(
    ids: tuple[str, bytes], base: pb.TranscriptState, offset: int, **fields: object,
) -> pb.StepRequest:
    fields.setdefault("action", pb.WRITE_STEP)
    fields.setdefault("max_tokens", 4)
    return step_request(*ids, base=base, new_text="", next_turn=pb.NextTurn(answer_offset_bytes=offset,
                                                                           messages=NEW), **fields)


def test_a_next_turn_reaches_the_state_a_create_of_the_whole_conversation_would(engine: Engine) -> None:
    ids = new_ids()
    base = first_turn(engine, ids)
    continued = engine.handle(next_turn(ids, base, len(REASONING.encode()))).result
    fresh_ids = new_ids()
    whole = [pb.ChatMessage(role=m.role, content=m.content) for m in CONTINUED]
    fresh = engine.handle(step_request(*fresh_ids, create=True, new_text="", action=pb.WRITE_STEP,
                                       max_tokens=4, messages=whole)).result
    assert continued.text == fresh.text
    expected = TranscriptDigest((m.role, m.content) for m in CONTINUED)
    expected.extend(continued.text)
    assert (continued.state.length_bytes, continued.state.digest) == (expected.view().length_bytes,
                                                                      expected.view().digest)
    assert (fresh.state.length_bytes, fresh.state.digest) == (continued.state.length_bytes,
                                                              continued.state.digest)
    # The held KV is kept up to where the two renderings part (the earlier turn's reasoning).
    assert continued.timings.reused_tokens > 0
    assert continued.timings.prefill_tokens < fresh.timings.prefill_tokens
    assert continued.timings.reused_tokens + continued.timings.prefill_tokens == fresh.timings.prefill_tokens


def test_the_next_call_builds_on_the_continued_context(engine: Engine) -> None:
    ids = new_ids()
    state = engine.handle(next_turn(ids, first_turn(engine, ids), len(REASONING.encode()))).result.state
    follow = engine.handle(step_request(*ids, base=state, new_text="\n", action=pb.ABSORB))
    assert follow.WhichOneof("outcome") == "result"


def test_a_stale_base_is_a_typed_mismatch_and_changes_nothing(engine: Engine) -> None:
    ids = new_ids()
    base = first_turn(engine, ids)
    stale = pb.TranscriptState(length_bytes=base.length_bytes, digest="0" * 64)
    reply = engine.handle(next_turn(ids, stale, 0))
    assert reply.WhichOneof("outcome") == "mismatch"
    assert reply.mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
    assert engine.stats().mismatches == {"DIGEST_MISMATCH": 1}
    # The held turn is untouched: the right base still opens the next turn.
    assert engine.handle(next_turn(ids, base, len(REASONING.encode()))).WhichOneof("outcome") == "result"
    unknown = engine.handle(next_turn(new_ids(), base, 0))
    assert unknown.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT


@pytest.mark.parametrize(("offset", "fields", "says"), [
    (999, {}, "the context holds"),  # past the held text
    (len(REASONING.encode()) - 2, {}, "UTF-8"),  # inside a character: made below with a two-byte one
    (0, {"create": True, "messages": PB_MESSAGES}, "cannot come with create=true"),
    (0, {"action": pb.CLOSE}, "CLOSE forgets it"),
])
def test_a_bad_next_turn_is_refused_naming_the_field(
    engine: Engine, offset: int, fields: dict[str, object], says: str,
) -> None:
    ids = new_ids()
    text = REASONING[:-1] + "é" if says == "UTF-8" else REASONING + ANSWER
    base = engine.handle(step_request(*ids, create=True, messages=PB_MESSAGES, new_text=text,
                                      action=pb.ABSORB)).result.state
    request = next_turn(ids, base, len(text.encode()) - 1 if says == "UTF-8" else offset, **fields)
    if fields.get("create"):
        request.ClearField("base")
    with pytest.raises(InvalidRequest, match=says):
        engine.handle(request)


def test_a_conversation_longer_than_a_create_may_carry_is_refused(engine: Engine) -> None:
    ids = new_ids()
    base = first_turn(engine, ids)
    request = next_turn(ids, base, 0)
    request.next_turn.messages.extend([pb.ChatMessage(role="user", content="more")] * 62)
    with pytest.raises(InvalidRequest, match="start a new conversation"):
        engine.handle(request)
