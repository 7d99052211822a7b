"""The step loop on real tiny ONNX models: routing, the kept probe, endings, degraded mode."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edge_helpers import CPU, set_manifest

from edge_client import (
    AlwaysCloud,
    AlwaysLocal,
    CloudUnavailableError,
    EdgeRouter,
    EntropyThreshold,
    InProcessLLM,
    RouterConfig,
    StepAverageEntropy,
    StepSettings,
    VerifyByScore,
)
from edge_client.llm_backend import LLMAction, LLMConversation, LLMReply, LLMRequest
from edge_client.loop import MIN_ANSWER_TOKENS
from edge_client.trace import AnswerStarted, Event, StepFinished, StepStarted, TextWritten, Traffic
from onnx_lm import CausalLM, ChatMessage, LMContext, SamplingParams, StopCriteria, decode_until, make_rng

QUESTION = "What is 12+30?"


def settings(**overrides: Any) -> StepSettings:
    values: dict[str, Any] = {"max_step_tokens": 10, "budget_tokens": 40, "answer_max_tokens": 8, "seed": 3}
    values.update(overrides)
    return StepSettings(**values)


class CountingRng(np.random.Generator):
    """The SLM's random stream, counting every token drawn from it (one uniform per token)."""

    def __init__(self, seed: int) -> None:
        super().__init__(np.random.PCG64(seed))
        self.draws = 0

    def random(self, *args: Any, **kwargs: Any) -> Any:
        self.draws += 1
        return super().random(*args, **kwargs)


def count_decode_calls(lm: CausalLM) -> list[int]:
    """Wrap `lm.decode_one` (one forward per generated token) with a counter."""
    calls = [0]
    original = lm.decode_one

    def counted(cache: Any, token_id: int) -> Any:
        calls[0] += 1
        return original(cache, token_id)

    lm.decode_one = counted  # type: ignore[method-assign]
    return calls


def stop_tokens(lm: CausalLM, stop: str) -> int:
    """Tokens sampled beyond the step's text for each way a step ends."""
    manifest = lm.manifest
    return {
        "delimiter": len(lm.tokenizer.encode(manifest.step_delimiter)),
        "think_end": 0,
        "eos": 1,
        "max_tokens": 0,
    }[stop]


def mixed_run(make_router: Callable[[StepSettings], EdgeRouter], **overrides: Any) -> tuple[EdgeRouter, int]:
    """A router (its LLM seed) and SLM seed whose run has steps on both sides.

    A tiny random model often ends early; the LLM's seed decides what it writes on the cloud steps,
    the SLM's what it writes on the edge ones, so both are searched.
    """
    for llm_seed in range(3, 13):
        router = make_router(settings(**{**overrides, "seed": llm_seed}))
        for seed in range(20):
            if {"edge", "cloud"} <= {s.writer for s in router.answer(QUESTION, rng=CountingRng(seed)).steps}:
                return router, seed
    raise AssertionError("no LLM seed in 3..12 and SLM seed in 0..19 gave a run with steps on both sides")


# ---- the probe token: kept by the SLM, the only waste of a cloud step ---------------------------


def test_probe_is_kept_on_edge_steps_and_is_the_one_wasted_token_of_a_cloud_step(
    slm_dir: Path, llm: InProcessLLM
) -> None:
    policy = EntropyThreshold(2.9)  # about the median first-token entropy of the tiny random SLM
    router, seed = mixed_run(
        lambda st: EdgeRouter.from_folders(slm_dir, llm, RouterConfig(policy, st), CPU), budget_tokens=80
    )
    decodes = count_decode_calls(router.slm)
    rng = CountingRng(seed)
    result = router.answer(QUESTION, rng=rng)

    edge = [s for s in result.steps if s.writer == "edge"]
    cloud = [s for s in result.steps if s.writer == "cloud"]
    # Every token the SLM drew is a token of an edge step, or one probe per cloud step.
    assert rng.draws == sum(s.slm_tokens for s in edge) + len(cloud)
    assert all(s.slm_tokens == 1 and s.wasted_tokens == 1 and s.llm_tokens > 0 for s in cloud)
    assert all(s.wasted_tokens == 0 for s in edge)
    for step in edge:  # the probe is the step's first token: nothing drawn beyond the text and its stop
        text = step.text.removesuffix(router.think_end or "") if step.stop == "think_end" else step.text
        assert step.slm_tokens == len(router.slm.tokenizer.encode(text)) + stop_tokens(router.slm, step.stop)
    # Generation forwards: one per drawn token except the last of each edge step (never fed);
    # a cloud step's probe costs no forward at all.
    assert decodes[0] == sum(s.slm_tokens - 1 for s in edge)
    assert result.totals.wasted_tokens == len(cloud)


def test_always_cloud_costs_the_slm_one_probe_per_step_and_no_generation(
    slm_dir: Path, llm: InProcessLLM
) -> None:
    router = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(AlwaysCloud(), settings()), CPU)
    decodes = count_decode_calls(router.slm)
    rng = CountingRng(2)
    result = router.answer(QUESTION, rng=rng)
    assert result.totals.cloud_steps == result.totals.steps >= 1
    assert rng.draws == result.totals.steps and decodes[0] == 0
    assert (
        result.answer_writer == "cloud"
        and result.totals.llm_tokens == sum(s.llm_tokens for s in result.steps) + result.answer_record.tokens
    )
    # Thinking ended for the reason the last step gives, or at the budget (40) the steps used up.
    last, used = result.steps[-1], sum(s.llm_tokens for s in result.steps)
    repeated = len(result.steps) > 1 and last.text == result.steps[-2].text
    ended = last.stop if last.stop in ("think_end", "eos") else "repeat" if repeated else "budget"
    assert result.thinking_stop == ended and (used == 40) == (ended == "budget")
    assert all(s.timing.cloud_compute_s > 0 and s.llm_prefill_tokens > 0 for s in result.steps)


def test_a_local_step_is_what_the_slm_writes_on_its_own(slm: CausalLM, llm: InProcessLLM) -> None:
    greedy = settings(temperature=0.0, max_step_tokens=12, budget_tokens=12)
    result = EdgeRouter(slm, llm, RouterConfig(AlwaysLocal(), greedy, answer_by="slm")).answer(QUESTION)
    ctx = LMContext(slm)
    ctx.sync(slm.tokenizer.render_prompt([ChatMessage("user", QUESTION)]))
    alone = decode_until(
        ctx, greedy.sampling, StopCriteria(("\n\n", "</think>"), 12), make_rng(greedy.sampling)
    )
    assert result.steps[0].text.removesuffix("</think>") == alone.text
    assert result.steps[0].decision == "edge" and result.totals.llm_tokens == 0


# ---- how thinking ends -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "thinking_stop", "first_step"),
    [("</think>", "think_end", "</think>"), ("<|im_end|>", "eos", ""), ("a", "repeat", "a" * 10)],
)
def test_thinking_ends_at_the_marker_eos_or_a_repeat(
    forced: Callable[[str, str], Path], llm: InProcessLLM, token: str, thinking_stop: str, first_step: str
) -> None:
    router = EdgeRouter.from_folders(forced("slm", token), llm, RouterConfig(AlwaysLocal(), settings()), CPU)
    result = router.answer(QUESTION)
    assert result.thinking_stop == thinking_stop
    assert result.steps[0].text == first_step
    assert len(result.steps) == (2 if thinking_stop == "repeat" else 1)
    # The transcript always reaches the answer through exactly one end-of-thinking marker.
    thinking = result.transcript[: len(result.transcript) - len(result.answer)]
    assert thinking.endswith("</think>") and thinking.count("</think>") == 1
    assert result.answer_writer == "cloud"


def test_thinking_ends_at_the_token_budget(forced: Callable[[str, str], Path], llm: InProcessLLM) -> None:
    router = EdgeRouter.from_folders(
        forced("slm", "a"), llm, RouterConfig(AlwaysLocal(), settings(budget_tokens=7)), CPU
    )
    result = router.answer(QUESTION)
    assert result.thinking_stop == "budget"
    assert [s.text for s in result.steps] == ["a" * 7]  # the last step is cut to the budget left
    assert result.transcript.startswith("aaaaaaa\n\n</think>")


@pytest.mark.parametrize("budget", [5, 13, 21])
def test_always_cloud_never_thinks_past_the_budget(slm_dir: Path, llm: InProcessLLM, budget: int) -> None:
    # The LLM writes every step; its tokens count against the budget like the SLM's would.
    router = EdgeRouter.from_folders(
        slm_dir, llm, RouterConfig(AlwaysCloud(), settings(budget_tokens=budget, max_step_tokens=4,
                                                           temperature=1.0)), CPU
    )
    result = router.answer(QUESTION)
    thought = sum(s.llm_tokens for s in result.steps)
    assert {s.writer for s in result.steps} == {"cloud"}
    assert result.thinking_stop == "budget" and thought == budget, (result.thinking_stop, thought)


def test_a_full_slm_context_ends_thinking_without_overflowing(
    forced: Callable[[str, str], Path], llm: InProcessLLM
) -> None:
    long_steps = settings(max_step_tokens=2000, budget_tokens=8192, answer_max_tokens=2048)
    router = EdgeRouter.from_folders(
        forced("slm", "a"), llm, RouterConfig(AlwaysLocal(), long_steps, answer_by="slm"), CPU
    )
    result = router.answer(QUESTION)
    assert result.thinking_stop == "context"
    prompt_tokens = len(
        router.slm.tokenizer.encode(router.slm.tokenizer.render_prompt([ChatMessage("user", QUESTION)]))
    )
    used = prompt_tokens + len(router.slm.tokenizer.encode(result.transcript))
    assert used <= router.slm.manifest.max_context_tokens
    # The steps left room for a short answer: a full context does not end in an empty one.
    assert result.answer_record.tokens >= MIN_ANSWER_TOKENS and result.answer.strip()


def test_a_plain_prompt_template_and_its_own_delimiter_and_marker(
    forced: Callable[[str, str], Path], llm: InProcessLLM, tmp_path: Path
) -> None:
    """The toy pair's format: `Q:{question}\\n`, steps on lines, `A:` ends thinking."""
    toy = set_manifest(
        Path(shutil.copytree(forced("slm", "a"), tmp_path / "toy")),
        chat_template=None,
        prompt_template="Q:{question}\n",
        step_delimiter="\n",
        think_end="A:",
        think_start=None,  # as the toy pair: no thinking block to open
    )
    router = EdgeRouter.from_folders(toy, llm, RouterConfig(AlwaysLocal(), settings(max_step_tokens=4)), CPU)
    result = router.answer("12+30")
    assert router.delimiter == "\n" and router.think_end == "A:"
    assert result.steps[0].slm_prefill_tokens == len("Q:12+30\n")  # one token per character
    assert result.thinking_stop == "repeat"
    assert result.transcript.startswith("aaaa\naaaa\nA:")


def test_a_cloud_step_can_end_thinking_with_the_marker(
    forced: Callable[[str, str], Path], slm_dir: Path
) -> None:
    llm = InProcessLLM.load(forced("llm", "</think>"), CPU)
    router = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(AlwaysCloud(), settings()), CPU)
    result = router.answer(QUESTION)
    assert result.thinking_stop == "think_end"
    assert [(s.writer, s.text, s.stop) for s in result.steps] == [("cloud", "</think>", "think_end")]


# ---- the run's record and stream ---------------------------------------------------------------


def test_transcript_stream_and_trace_agree(slm_dir: Path, llm: InProcessLLM) -> None:
    router, seed = mixed_run(
        lambda st: EdgeRouter.from_folders(slm_dir, llm, RouterConfig(EntropyThreshold(2.9), st), CPU)
    )
    events: list[Event] = []
    result = router.answer(QUESTION, on_event=events.append, rng=CountingRng(seed))
    texts: list[str] = []
    for event in events:
        if isinstance(event, StepStarted | AnswerStarted):
            texts.append("")
        elif isinstance(event, TextWritten):
            texts[-1] += event.text
    assert texts == [s.text for s in result.steps] + [result.answer]
    assert [e.record for e in events if isinstance(e, StepFinished)] == list(result.steps)
    assert [(e.writer, e.entropy_nats) for e in events if isinstance(e, StepStarted)] == [
        (s.writer, s.entropy_nats) for s in result.steps
    ]
    closing = "" if result.thinking_stop == "think_end" else "\n\n</think>"
    assert result.transcript == "\n\n".join(s.text for s in result.steps) + closing + result.answer
    totals = result.totals
    assert totals.steps == totals.edge_steps + totals.cloud_steps + totals.degraded_steps
    assert totals.timing.wall_s >= totals.timing.edge_compute_s
    assert all(
        s.timing.wall_s > 0 and 0 <= s.entropy_nats <= np.log(router.slm.manifest.vocab_size) + 1e-6
        for s in result.steps
    )


def test_same_seed_same_run(slm_dir: Path, llm: InProcessLLM) -> None:
    router = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(EntropyThreshold(3.3), settings(seed=9)), CPU)
    first, second = router.answer(QUESTION), router.answer(QUESTION)
    assert first.transcript == second.transcript
    assert [s.writer for s in first.steps] == [s.writer for s in second.steps]


def test_answer_by_slm_and_thinking_only(slm: CausalLM) -> None:
    by_slm = EdgeRouter(slm, None, RouterConfig(AlwaysLocal(), settings(), answer_by="slm")).answer(QUESTION)
    assert by_slm.answer_writer == "edge" and by_slm.answer_record.tokens > 0
    assert by_slm.totals.traffic.calls == 0 and "llm" not in by_slm.providers
    none = EdgeRouter(slm, None, RouterConfig(AlwaysLocal(), settings(), answer_by="none")).answer(QUESTION)
    assert none.answer_writer == "none" and none.answer == ""


# ---- draft-then-judge policies ---------------------------------------------------------------


def test_step_average_accepts_or_rewrites_whole_drafts(slm_dir: Path, llm: InProcessLLM) -> None:
    rewrite_all = EdgeRouter.from_folders(
        slm_dir, llm, RouterConfig(StepAverageEntropy(0.0), settings()), CPU
    )
    result = rewrite_all.answer(QUESTION)
    assert {s.decision for s in result.steps} == {"draft:rewrite"}
    assert all(s.writer == "cloud" and s.wasted_tokens == s.slm_tokens > 0 for s in result.steps)
    assert all(s.signal_name == "step_mean_entropy" for s in result.steps)
    keep_all = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(StepAverageEntropy(50.0), settings()), CPU)
    kept = keep_all.answer(QUESTION)
    assert {(s.decision, s.writer, s.wasted_tokens) for s in kept.steps} == {("draft:accept", "edge", 0)}
    assert kept.totals.traffic.calls == 1  # only the final answer


def test_verify_scores_each_draft_with_the_llm(slm_dir: Path, llm: InProcessLLM) -> None:
    router = EdgeRouter.from_folders(slm_dir, llm, RouterConfig(VerifyByScore(-100.0), settings()), CPU)
    result = router.answer(QUESTION)
    assert all(s.decision == "draft:accept" and s.signal_name == "llm_mean_logprob" for s in result.steps)
    assert all(s.signal is not None and -100.0 < s.signal < 0 for s in result.steps)
    assert result.totals.traffic.calls == len(result.steps) + 1  # a SCORE per step, then the answer


# ---- the cloud failing -------------------------------------------------------------------------


class FaultyLLM:
    """Fault injection only: an in-process LLM whose calls raise when `fail` says so."""

    name = "faulty"
    provider = "faulty"

    def __init__(self, inner: InProcessLLM, fail: Callable[[LLMRequest, int], Exception | None]) -> None:
        self.inner, self.fail = inner, fail

    def open(self, messages: Any) -> LLMConversation:
        return _FaultyConversation(self.inner.open(messages), self.fail)


class _FaultyConversation:
    def __init__(self, inner: LLMConversation, fail: Callable[[LLMRequest, int], Exception | None]) -> None:
        self.inner, self.fail, self.calls = inner, fail, 0

    def call(self, request: LLMRequest) -> LLMReply:
        self.calls += 1
        error = self.fail(request, self.calls)
        if error is not None:
            raise error
        return self.inner.call(request)

    def push(self, transcript: str) -> None:
        self.inner.push(transcript)

    def close(self) -> None:
        self.inner.close()


def test_unreachable_cloud_steps_and_answer_are_written_by_the_slm(slm_dir: Path, llm: InProcessLLM) -> None:
    def every_other_step_and_the_answer(request: LLMRequest, n: int) -> Exception | None:
        if request.action == LLMAction.WRITE_ANSWER or n % 2 == 0:
            return CloudUnavailableError("cloud.example:8001 did not answer within 1.0 s")
        return None

    faulty = FaultyLLM(llm, every_other_step_and_the_answer)
    router = EdgeRouter.from_folders(
        slm_dir, faulty, RouterConfig(AlwaysCloud(), settings(budget_tokens=60)), CPU
    )
    rng = CountingRng(4)
    result = router.answer(QUESTION, rng=rng)
    writers = [s.writer for s in result.steps]
    assert "degraded" in writers and "cloud" in writers
    for step in result.steps:
        if step.writer == "degraded":  # the probe is kept: the SLM wrote the step from it
            assert step.wasted_tokens == 0 and step.slm_tokens >= 1 and "did not answer" in step.error
            # The failed call is counted, but it brought no text, no bytes and no cloud time.
            assert step.llm_tokens == 0 and step.traffic == Traffic(calls=1)
            assert step.timing.cloud_compute_s == 0
    assert result.answer_writer == "degraded" and "did not answer" in result.answer_record.error
    assert result.totals.degraded_steps == writers.count("degraded")
    assert rng.draws == sum(s.slm_tokens for s in result.steps) + result.answer_record.tokens


def test_unreachable_cloud_while_judging_keeps_the_draft(slm_dir: Path, llm: InProcessLLM) -> None:
    def no_scores(request: LLMRequest, n: int) -> Exception | None:
        return CloudUnavailableError("connection refused") if request.action == LLMAction.SCORE else None

    router = EdgeRouter.from_folders(
        slm_dir, FaultyLLM(llm, no_scores), RouterConfig(VerifyByScore(-1.0), settings()), CPU
    )
    result = router.answer(QUESTION)
    assert {(s.writer, s.decision) for s in result.steps} == {("degraded", "draft:accept")}
    assert result.answer_writer == "cloud"


class PushRecorder:
    """Records what the loop hands a backend with background sync (`push`), then absorbs it."""

    name = "push-recorder"
    provider = "push-recorder"

    def __init__(self, inner: InProcessLLM) -> None:
        self.inner = inner
        self.pushed: list[str] = []
        self.called: list[str] = []

    def open(self, messages: Any) -> LLMConversation:
        recorder = self

        class Conversation:
            inner = recorder.inner.open(messages)

            def push(self, transcript: str) -> None:
                recorder.pushed.append(transcript)
                self.inner.call(LLMRequest(LLMAction.ABSORB, transcript, SamplingParams()))

            def call(self, request: LLMRequest) -> LLMReply:
                recorder.called.append(request.transcript)
                return self.inner.call(request)

            def close(self) -> None:
                self.inner.close()

        return Conversation()


def test_edge_steps_are_pushed_to_a_background_syncing_backend(slm_dir: Path, llm: InProcessLLM) -> None:
    backend = PushRecorder(llm)
    router, seed = mixed_run(
        lambda st: EdgeRouter.from_folders(slm_dir, backend, RouterConfig(EntropyThreshold(2.9), st), CPU)
    )
    backend.pushed.clear()
    backend.called.clear()
    result = router.answer(QUESTION, rng=CountingRng(seed))
    after_edge = [s for s in result.steps[:-1] if s.writer != "cloud"]
    assert len(backend.pushed) == len(after_edge) >= 1
    # Each push ends with the delimiter that starts the next step, and every later call extends it.
    for pushed in backend.pushed:
        assert pushed.endswith("\n\n")
        assert all(called.startswith(pushed) for called in backend.called if len(called) >= len(pushed))
    assert result.transcript.startswith(backend.pushed[-1])
