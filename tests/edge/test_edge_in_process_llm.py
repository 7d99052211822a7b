"""`InProcessLLM`: the LLM backend interface over a real tiny ONNX model in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_client import InProcessLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import LLM_STREAM, ChatMessage, LMContext, SamplingParams, StopCriteria, decode_until, make_rng
from onnx_lm.sampling import log_softmax

MESSAGES = [ChatMessage("user", "What is 12+30?")]
SAMPLING = SamplingParams(temperature=0.6, top_p=0.95, seed=1)


def write(conversation, transcript: str, max_tokens: int = 6):  # type: ignore[no-untyped-def]
    return conversation.call(LLMRequest(LLMAction.WRITE_STEP, transcript, SAMPLING, ("\n\n",), max_tokens))


def test_score_is_the_mean_log_probability_of_the_candidate(llm: InProcessLLM) -> None:
    conversation = llm.open(MESSAGES)
    transcript, candidate = "12+30", "=42"
    reply = conversation.call(LLMRequest(LLMAction.SCORE, transcript, SAMPLING, candidate=candidate))
    lm = llm.lm
    prompt = lm.tokenizer.render_prompt(MESSAGES)
    before = lm.tokenizer.encode(prompt + transcript)
    full = lm.tokenizer.encode(prompt + transcript + candidate)
    logits = lm.forward(lm.new_cache(), full)
    expected = np.mean([log_softmax(logits[i - 1])[full[i]] for i in range(len(before), len(full))])
    assert reply.mean_logprob == pytest.approx(float(expected), abs=1e-4)
    assert reply.cost.decode_tokens == 0 and reply.cost.compute_s > 0


def test_scoring_leaves_the_context_as_it_was(llm: InProcessLLM) -> None:
    scored = llm.open(MESSAGES)
    scored.call(LLMRequest(LLMAction.SCORE, "12+30", SAMPLING, candidate="=42 and more"))
    plain = llm.open(MESSAGES)
    assert write(scored, "12+30").text == write(plain, "12+30").text
    assert scored.ctx.token_ids == plain.ctx.token_ids  # type: ignore[attr-defined]


def test_write_step_sends_only_the_delta_and_reports_its_cost(llm: InProcessLLM) -> None:
    conversation = llm.open(MESSAGES)
    first = write(conversation, "")
    prompt_tokens = len(llm.lm.tokenizer.encode(llm.lm.tokenizer.render_prompt(MESSAGES)))
    assert first.cost.prefill_tokens == prompt_tokens
    assert 1 <= first.cost.decode_tokens <= 6 and first.cost.bytes_up == 0
    # The reply is what the model writes on its own from the prompt, and ends the same way.
    ctx = LMContext(llm.lm)
    ctx.sync(llm.lm.tokenizer.render_prompt(MESSAGES))
    alone = decode_until(ctx, SAMPLING, StopCriteria(("\n\n",), 6), make_rng(SAMPLING, LLM_STREAM))
    assert (first.text, first.stop_reason) == (alone.text, alone.stop_reason.value)
    # After a write the LLM holds transcript + reply: the next call feeds only the new text
    # (plus, at most, the last generated token, which a stop is never fed for).
    second = write(conversation, first.text + "\n\nok")
    assert second.cost.prefill_tokens <= len(llm.lm.tokenizer.encode("\n\nok")) + 1


def test_absorb_only_takes_in_the_transcript(llm: InProcessLLM) -> None:
    conversation = llm.open(MESSAGES)
    reply = conversation.call(LLMRequest(LLMAction.ABSORB, "step one", SAMPLING))
    assert (reply.text, reply.stop_reason, reply.cost.decode_tokens) == ("", "absorbed", 0)
    assert reply.cost.prefill_tokens > 0


def test_a_full_context_writes_nothing(llm_dir: Path, llm: InProcessLLM) -> None:
    conversation = llm.open(MESSAGES)
    room = llm.lm.manifest.max_context_tokens - len(
        llm.lm.tokenizer.encode(llm.lm.tokenizer.render_prompt(MESSAGES))
    )
    reply = write(conversation, "a" * room, max_tokens=50)
    assert (reply.text, reply.stop_reason) == ("", "max_tokens")
