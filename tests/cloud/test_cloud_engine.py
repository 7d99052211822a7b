"""The engine in process, on the tiny Qwen3: contexts, mismatches, commits, SCORE, limits."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cloud_helpers import MESSAGES, new_ids, step_request

from cloud_service.engines.onnx import Engine, EngineConfig, RequestCancelled
from cloud_service.errors import InvalidRequest
from onnx_lm import CausalLM
from onnx_lm.context import common_prefix_length
from onnx_lm.sampling import log_softmax
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptDigest

PB_MESSAGES = [pb.ChatMessage(role=m.role, content=m.content) for m in MESSAGES]


class Clock:
    """A monotonic clock the test moves; `tick_s` is added on every reading."""

    def __init__(self, tick_s: float = 0.0) -> None:
        self.now, self.tick_s = 1000.0, tick_s

    def __call__(self) -> float:
        self.now += self.tick_s
        return self.now


@pytest.fixture(scope="module")
def lm(tiny_qwen3_dir: Path) -> CausalLM:
    return CausalLM.load(tiny_qwen3_dir)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def engine(lm: CausalLM, clock: Clock) -> Engine:
    return Engine(lm, EngineConfig(cache_budget_bytes=64 << 20, idle_ttl_s=60.0), clock=clock)


def create(engine: Engine, ids: tuple[str, bytes], text: str = "", **fields: object) -> pb.StepResult:
    fields.setdefault("action", pb.WRITE_STEP)
    fields.setdefault("max_tokens", 8)
    reply = engine.handle(step_request(*ids, create=True, messages=PB_MESSAGES, new_text=text, **fields))
    assert reply.WhichOneof("outcome") == "result"
    return reply.result


def follow(engine: Engine, ids: tuple[str, bytes], base: pb.TranscriptState, text: str,
           **fields: object) -> pb.StepReply:
    fields.setdefault("action", pb.WRITE_STEP)
    fields.setdefault("max_tokens", 8)
    return engine.handle(step_request(*ids, base=base, new_text=text, **fields))


def client_digest(*appended: str) -> TranscriptDigest:
    digest = TranscriptDigest((m.role, m.content) for m in MESSAGES)
    for text in appended:
        digest.extend(text)
    return digest


def test_a_continued_context_prefills_only_the_new_text(engine: Engine) -> None:
    ids = new_ids()
    first = create(engine, ids, "Let me think.")
    assert first.timings.reused_tokens == 0 and first.timings.prefill_tokens > 20
    second = follow(engine, ids, first.state, "\n\nNext:").result
    new_tokens = len(engine.lm.tokenizer.encode("\n\nNext:"))
    # The last generated token was never fed (decode stops before feeding it): at most it and a
    # re-tokenized boundary token come on top of the new text.
    assert new_tokens <= second.timings.prefill_tokens <= new_tokens + 2
    assert second.timings.reused_tokens >= first.timings.prefill_tokens - 1
    expected = client_digest("Let me think." + first.text, "\n\nNext:" + second.text).view()
    assert (second.state.length_bytes, second.state.digest) == (expected.length_bytes, expected.digest)


def test_mismatches_are_typed_and_leave_the_context_usable(engine: Engine) -> None:
    ids = new_ids()
    state = create(engine, ids, "Step 1:", action=pb.ABSORB, max_tokens=0).state
    wrong_length = pb.TranscriptState(length_bytes=state.length_bytes + 1, digest=state.digest)
    wrong_digest = pb.TranscriptState(length_bytes=state.length_bytes, digest="0" * 64)
    cases = [
        (ids, wrong_length, pb.ContextMismatch.LENGTH_MISMATCH),
        (ids, wrong_digest, pb.ContextMismatch.DIGEST_MISMATCH),
        (new_ids(), state, pb.ContextMismatch.UNKNOWN_CONTEXT),
    ]
    for call_ids, base, kind in cases:
        reply = follow(engine, call_ids, base, " more")
        assert reply.WhichOneof("outcome") == "mismatch" and reply.mismatch.kind == kind
    assert follow(engine, ids, state, " more").WhichOneof("outcome") == "result"
    assert engine.stats().mismatches == {"LENGTH_MISMATCH": 1, "DIGEST_MISMATCH": 1, "UNKNOWN_CONTEXT": 1}


def test_another_credential_cannot_see_or_extend_a_context(engine: Engine) -> None:
    context_id, owner_key = new_ids()
    state = create(engine, (context_id, owner_key), "Step 1:").state
    _, other_key = new_ids()
    reply = follow(engine, (context_id, other_key), state, " hijack")
    assert reply.mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
    assert not reply.mismatch.server_state.digest  # nothing about the owner's context leaks
    assert follow(engine, (context_id, owner_key), state, " mine").WhichOneof("outcome") == "result"


def test_a_cancelled_write_with_new_text_commits_neither_the_text_nor_the_decode(lm: CausalLM) -> None:
    # The call brings new text; the cancel comes mid-decode. The client's old base must still be
    # the server's state (commit only on success), so the same call sent again is accepted. The
    # cancel signal is injected here; tests/cloud/test_cloud_cancel.py runs Triton's real one.
    new_text = "\n\nStep two: add them."
    reference = Engine(lm)
    ids = new_ids()
    state = create(reference, ids, "Step one.", action=pb.ABSORB, max_tokens=0).state
    expected = follow(reference, ids, state, new_text, max_tokens=30).result

    ticking = Engine(lm, clock=Clock(tick_s=1.0))  # every clock reading a second later: polls at once
    state = create(ticking, ids, "Step one.", action=pb.ABSORB, max_tokens=0).state
    cancelled = step_request(*ids, base=state, action=pb.WRITE_STEP, max_tokens=30, new_text=new_text)
    with pytest.raises(RequestCancelled):
        ticking.handle(cancelled, is_cancelled=lambda: True)
    retry = follow(ticking, ids, state, new_text, max_tokens=30)
    assert retry.WhichOneof("outcome") == "result"
    assert (retry.result.text, retry.result.state.digest) == (expected.text, expected.state.digest)


def test_score_matches_a_direct_computation_and_keeps_the_state(engine: Engine, lm: CausalLM) -> None:
    ids = new_ids()
    state = create(engine, ids, "Let me think.", action=pb.ABSORB, max_tokens=0).state
    candidate = " We add 2 and 2."
    reply = follow(engine, ids, state, "\n\n" + candidate, action=pb.SCORE, max_tokens=0,
                   score_bytes=len(candidate.encode()))
    result = reply.result
    assert (result.state.length_bytes, result.state.digest) == (state.length_bytes, state.digest)

    prompt = lm.tokenizer.render_prompt(list(MESSAGES))
    full = lm.tokenizer.encode(prompt + "Let me think.\n\n" + candidate)
    head = lm.tokenizer.encode(prompt + "Let me think.\n\n")
    first = common_prefix_length(head, full)
    rows = lm.forward(lm.new_cache(), full)  # rows[i] predicts full[i + 1]
    expected = np.mean([log_softmax(rows[p - 1])[full[p]] for p in range(first, len(full))])
    assert result.scored_tokens == len(full) - first
    assert result.mean_logprob == pytest.approx(expected, abs=1e-4)

    # The KV left behind by scoring must not change what the context writes next.
    after_score = follow(engine, ids, state, "\n\n", max_tokens=12).result.text
    fresh = Engine(lm)
    fresh_state = create(fresh, ids, "Let me think.", action=pb.ABSORB, max_tokens=0).state
    assert follow(fresh, ids, fresh_state, "\n\n", max_tokens=12).result.text == after_score


def test_max_tokens_is_enforced(engine: Engine) -> None:
    result = create(engine, new_ids(), "", max_tokens=3)
    assert result.timings.decode_tokens == 3 and result.stop_reason == pb.MAX_TOKENS


def test_a_write_stops_at_a_stop_string_which_is_not_committed(engine: Engine) -> None:
    free = create(engine, new_ids(), "", max_tokens=30)
    stop = free.text[4]
    ids = new_ids()
    result = create(engine, ids, "", max_tokens=30, stop=[stop])
    assert result.stop_reason == pb.STOP_STRING and result.stop_string == stop
    assert result.text == free.text[: free.text.index(stop)]
    assert result.state.length_bytes == len(result.text.encode())


def _with_delimiter(model_dir: Path, folder: Path, delimiter: str) -> Path:
    copy = folder / "llm"
    shutil.copytree(model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["step_delimiter"] = delimiter
    # No thinking block: an answer would otherwise first close it (test_realtok_pairs covers that).
    manifest["think_start"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_write_step_stops_at_the_step_delimiter_and_write_answer_does_not(
    engine: Engine, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    free = create(engine, new_ids(), "", max_tokens=30)
    delimiter = free.text[6]
    custom = Engine(CausalLM.load(_with_delimiter(tiny_qwen3_dir, tmp_path, delimiter)))
    step = create(custom, new_ids(), "", max_tokens=30)
    assert step.stop_reason == pb.STOP_STRING and step.stop_string == delimiter
    assert step.text == free.text[: free.text.index(delimiter)]
    answer = create(custom, new_ids(), "", action=pb.WRITE_ANSWER, max_tokens=30)
    assert answer.text == free.text and answer.stop_reason == free.stop_reason


def test_a_context_past_the_window_is_refused_without_losing_state(engine: Engine) -> None:
    ids = new_ids()
    state = create(engine, ids, "Step 1:", action=pb.ABSORB, max_tokens=0).state
    window = engine.lm.manifest.max_context_tokens
    with pytest.raises(InvalidRequest, match="window"):
        follow(engine, ids, state, "x" * window)
    assert follow(engine, ids, state, " fine").WhichOneof("outcome") == "result"


def test_idle_contexts_expire(engine: Engine, clock: Clock) -> None:
    ids = new_ids()
    state = create(engine, ids, "Step 1:").state
    clock.now += 61.0
    assert follow(engine, ids, state, " late").mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT
    assert engine.stats().store.evictions["ttl"] == 1


def test_the_byte_budget_evicts_the_least_recently_used(lm: CausalLM) -> None:
    per_context = 60 * lm.manifest.kv.bytes_per_token()  # a bit more than one short context
    small = Engine(lm, EngineConfig(cache_budget_bytes=2 * per_context, idle_ttl_s=60.0))
    contexts = [new_ids() for _ in range(4)]
    for ids in contexts:
        create(small, ids, "", action=pb.ABSORB, max_tokens=0)
    stats = small.stats().store
    assert stats.bytes_held <= 2 * per_context and stats.contexts <= 2
    assert stats.evictions["budget"] >= 2
    assert follow(small, contexts[0], pb.TranscriptState(), "").mismatch.kind == (
        pb.ContextMismatch.UNKNOWN_CONTEXT
    )


def test_close_forgets_the_context(engine: Engine) -> None:
    ids = new_ids()
    state = create(engine, ids, "Step 1:").state
    assert engine.handle(step_request(*ids, action=pb.CLOSE)).result.stop_reason == pb.ABSORBED
    assert follow(engine, ids, state, "").mismatch.kind == pb.ContextMismatch.UNKNOWN_CONTEXT


def test_create_replaces_a_context_and_reuses_its_kv(engine: Engine) -> None:
    ids = new_ids()
    create(engine, ids, "Step 1: a long enough first line")
    again = create(engine, ids, "Step 1: a different line")
    assert again.timings.reused_tokens > 20  # the prompt's KV was kept
    assert again.state.length_bytes == len(("Step 1: a different line" + again.text).encode())


BadFields = Callable[[tuple[str, bytes]], pb.StepRequest]
BAD_REQUESTS: list[tuple[str, BadFields, str]] = [
    ("version", lambda ids: pb.StepRequest(protocol_version=3, context_id=ids[0], client_key=ids[1]),
     "protocol_version 3 is not supported; this server speaks versions 1 and 2"),
    ("hex digest in v2", lambda ids: pb.StepRequest(
        protocol_version=2, context_id=ids[0], client_key=ids[1], action=pb.ABSORB,
        base=pb.TranscriptState(length_bytes=3, digest="ab" * 32)), "version 1's field"),
    ("short raw digest", lambda ids: pb.StepRequest(
        protocol_version=2, context_id=ids[0], client_key=ids[1], action=pb.ABSORB,
        base=pb.TranscriptState(length_bytes=3, digest_raw=b"x" * 15)), "must be 16 bytes"),
    ("raw digest in v1", lambda ids: step_request(
        *ids, action=pb.ABSORB, base=pb.TranscriptState(length_bytes=3, digest_raw=b"x" * 16)),
     "version 2's field"),
    ("empty id", lambda ids: step_request("", ids[1], action=pb.ABSORB), "context_id is empty"),
    ("short id", lambda ids: step_request("abc123", ids[1], action=pb.ABSORB), "hex digits"),
    ("non-hex id", lambda ids: step_request("z" * 32, ids[1], action=pb.ABSORB), "hex digits"),
    ("short key", lambda ids: step_request(ids[0], b"short", action=pb.ABSORB), "client_key"),
    ("no action", lambda ids: step_request(*ids), "action"),
    ("unknown action", lambda ids: step_request(*ids, action=99), "action"),
    ("max_tokens 0", lambda ids: step_request(*ids, action=pb.WRITE_STEP, max_tokens=0), "max_tokens"),
    ("max_tokens 1e9", lambda ids: step_request(*ids, action=pb.WRITE_STEP, max_tokens=10**9), "max_tokens"),
    ("10 MB text", lambda ids: step_request(*ids, action=pb.ABSORB, new_text="a" * 10_000_000), "limit"),
    ("messages without create", lambda ids: step_request(*ids, action=pb.ABSORB, messages=PB_MESSAGES),
     "create=true"),
    ("create without messages", lambda ids: step_request(*ids, action=pb.ABSORB, create=True), "messages"),
    ("create with a base", lambda ids: step_request(
        *ids, action=pb.ABSORB, create=True, messages=PB_MESSAGES, base=pb.TranscriptState(length_bytes=3)),
     "base must be empty"),
    ("bad role", lambda ids: step_request(
        *ids, action=pb.ABSORB, create=True, messages=[pb.ChatMessage(role="robot", content="x")]), "role"),
    ("temperature", lambda ids: step_request(
        *ids, action=pb.WRITE_STEP, max_tokens=1, sampling=pb.Sampling(temperature=-1)), "temperature"),
    ("top_p", lambda ids: step_request(
        *ids, action=pb.WRITE_STEP, max_tokens=1, sampling=pb.Sampling(temperature=1, top_p=1.5)), "top_p"),
    ("empty stop", lambda ids: step_request(*ids, action=pb.WRITE_STEP, max_tokens=1, stop=[""]), "stop"),
    ("score_bytes", lambda ids: step_request(*ids, action=pb.SCORE, new_text="abc", score_bytes=4),
     "score_bytes"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_invalid_requests_are_refused_with_a_reason(engine: Engine, name: str, make: BadFields,
                                                     fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        engine.handle(make(new_ids()))


def test_version_2_carries_the_digest_in_16_raw_bytes(engine: Engine) -> None:
    """A v2 call names its base by the digest's first 16 bytes and gets its states back that way; a
    wrong byte is a DIGEST_MISMATCH; a v1 call on the same context is still answered in hex."""
    ids = new_ids()
    first = engine.handle(pb.StepRequest(protocol_version=2, context_id=ids[0], client_key=ids[1],
                                         create=True, messages=PB_MESSAGES, new_text="Step 1:",
                                         action=pb.ABSORB)).result
    assert (first.state.digest, len(first.state.digest_raw)) == ("", 16)
    held = TranscriptDigest((m.role, m.content) for m in MESSAGES)
    held.extend("Step 1:")
    assert first.state.digest_raw == bytes.fromhex(held.view().digest)[:16]

    wrong = pb.TranscriptState(length_bytes=first.state.length_bytes,
                               digest_raw=bytes([first.state.digest_raw[0] ^ 1]) + first.state.digest_raw[1:])
    refused = engine.handle(pb.StepRequest(protocol_version=2, context_id=ids[0], client_key=ids[1],
                                           base=wrong, new_text=" x", action=pb.ABSORB))
    assert refused.mismatch.kind == pb.ContextMismatch.DIGEST_MISMATCH
    assert refused.mismatch.server_state == first.state  # told back in the caller's version

    second = engine.handle(pb.StepRequest(protocol_version=2, context_id=ids[0], client_key=ids[1],
                                          base=first.state, new_text=" x", action=pb.ABSORB)).result
    held.extend(" x")
    v1_base = pb.TranscriptState(length_bytes=second.state.length_bytes, digest=held.view().digest)
    v1 = follow(engine, ids, v1_base, " y", action=pb.ABSORB).result
    held.extend(" y")
    assert (v1.state.digest, v1.state.digest_raw) == (held.view().digest, b"")


def test_undecodable_bytes_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="not a serialized"):
        engine.handle_bytes(b"\xff\xff\xff garbage")


def test_one_random_stream_per_context_as_the_in_process_llm(engine: Engine, lm: CausalLM) -> None:
    """Under one seed, call after call, the engine draws what the in-process LLM draws."""
    from edge_client.in_process_llm import InProcessLLM
    from edge_client.llm_backend import LLMAction, LLMRequest
    from onnx_lm import SamplingParams

    sampling = pb.Sampling(temperature=1.0, top_p=1.0, seed=7)
    ids = new_ids()
    first = create(engine, ids, "Step 1:", action=pb.WRITE_ANSWER, max_tokens=6, sampling=sampling)
    second = follow(engine, ids, first.state, " then", action=pb.WRITE_ANSWER, max_tokens=6,
                    sampling=sampling).result
    local = InProcessLLM(lm).open(list(MESSAGES))
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=7)
    texts = []
    for transcript in ("Step 1:", "Step 1:" + first.text + " then"):
        reply = local.call(LLMRequest(LLMAction.WRITE_ANSWER, transcript, params, (), 6))
        texts.append(reply.text)
    assert [first.text, second.text] == texts
    # A stream restarted per call would repeat the first call's draws on the second.
    assert second.text != create(engine, new_ids(), "Step 1:" + first.text + " then", action=pb.WRITE_ANSWER,
                                 max_tokens=6, sampling=sampling).text


def test_a_cancelled_call_leaves_the_random_stream_where_it_was(lm: CausalLM) -> None:
    sampling = pb.Sampling(temperature=1.0, top_p=1.0, seed=11)

    def two_writes(engine: Engine, cancel_second_once: bool) -> str:
        ids = new_ids()
        state = create(engine, ids, "Step 1:", action=pb.WRITE_ANSWER, max_tokens=4, sampling=sampling).state
        second = step_request(*ids, base=state, new_text=" a", action=pb.WRITE_ANSWER, max_tokens=20,
                              sampling=sampling)
        if cancel_second_once:
            with pytest.raises(RequestCancelled):
                engine.handle(second, is_cancelled=lambda: True)
        return engine.handle(second).result.text

    ticking = Engine(lm, clock=Clock(tick_s=1.0))  # the cancel check fires on its first poll
    assert two_writes(ticking, cancel_second_once=True) == two_writes(Engine(lm), cancel_second_once=False)


class _EncodeSpy:
    """Counts the tokenizations of a real codec (delegates everything)."""

    def __init__(self, codec: object) -> None:
        self.codec, self.calls = codec, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.codec, name)

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return self.codec.encode(text)  # type: ignore[attr-defined, no-any-return]


def test_text_that_cannot_fit_the_window_is_refused_before_any_tokenization(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = engine.lm.manifest.max_context_tokens
    ids = new_ids()
    held = create(engine, ids, "Let me think.")
    spy = _EncodeSpy(engine.lm.tokenizer)
    monkeypatch.setattr(engine.lm, "tokenizer", spy)
    too_long = "a" * (window * engine._max_token_bytes + 1)  # at least window + 1 tokens, however split
    prompt = [pb.ChatMessage(role="user", content=too_long)]
    for request in (step_request(*ids, base=held.state, action=pb.ABSORB, new_text=too_long),
                    step_request(*new_ids(), create=True, messages=prompt, action=pb.ABSORB)):
        with pytest.raises(InvalidRequest, match=f"window is {window} tokens"):
            engine.handle(request)
    assert spy.calls == 0
    # The same context still works, and text that only the tokenizer can judge is still tokenized.
    follow(engine, ids, held.state, " More.")
    assert spy.calls > 0


def test_the_longest_token_bound_holds_for_every_token(lm: CausalLM) -> None:
    from cloud_service.engines.onnx import max_token_bytes

    bound = max_token_bytes(lm)
    assert all(len(lm.tokenizer.token_text(i).encode()) < bound for i in range(lm.tokenizer.vocab_size))


def test_a_context_larger_than_the_whole_budget_is_refused_not_evicted_after_each_call(lm: CausalLM) -> None:
    from cloud_service.errors import ContextTooLarge

    per_token = lm.manifest.kv.bytes_per_token()
    small = Engine(lm, EngineConfig(cache_budget_bytes=200 * per_token, idle_ttl_s=60.0))
    ids = new_ids()
    held = create(small, ids, "Let me think.", max_tokens=4)
    # A write whose room in the budget runs out stops early instead of outgrowing it.
    grown = follow(small, ids, held.state, " Step " * 10, max_tokens=400).result
    assert grown.stop_reason in (pb.MAX_TOKENS, pb.STOP_STRING, pb.EOS)
    assert small.store.bytes_held <= small.config.cache_budget_bytes
    with pytest.raises(ContextTooLarge, match="whole cache budget"):
        follow(small, ids, grown.state, " more" * 20, max_tokens=4)
    # The context is still held as it was: the next call continues it, nothing was evicted.
    after = follow(small, ids, grown.state, " Done.", action=pb.ABSORB)
    assert after.WhichOneof("outcome") == "result"
    assert after.result.timings.reused_tokens > 0
    assert small.stats().store.evictions["budget"] == 0
