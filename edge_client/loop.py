"""The GlimpRouter step loop: one loop, any routing policy, any LLM backend.

Per question: render the prompt with the SLM's template; the transcript (text appended after
the prompt) starts empty. Per step:
  1. glimpse: sync the SLM to prompt + transcript, take the entropy H of the next token's
     distribution (exact, whole vocabulary) and sample the probe token with the step's settings;
  2. route: the policy answers EDGE, CLOUD or DRAFT;
  3. write: EDGE continues from the probe (kept: same distribution as sampling it again);
     CLOUD asks the LLM for the step (the probe is the one wasted SLM token); DRAFT lets the SLM
     write the whole step and then asks the policy to ACCEPT it or have the LLM REWRITE it.
The side that did not write a step ingests it at its next sync. Thinking ends at the
end-of-thinking marker, EOS, a step equal to the previous one, the token budget, or a full SLM
context; then the LLM (or the SLM) writes the final answer.

A conversation that offers `push(transcript)` (background context sync) is handed the transcript
at the start of each step that follows an SLM-written one, so the cloud absorbs the SLM's text
while the SLM keeps working.

A cloud call that fails with `CloudUnavailableError` is not fatal: the SLM writes that step (or
the answer) and the trace marks it "degraded". `NotAuthorizedError` and other cloud errors are
not hidden: they propagate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_client.config import RouterConfig
from edge_client.errors import CloudUnavailableError
from edge_client.in_process_llm import check_role
from edge_client.llm_backend import CallCost, LLMAction, LLMBackend, LLMConversation, LLMReply, LLMRequest
from edge_client.policies import Decision, Draft, Probe, Route, Scorer, Verdict
from edge_client.trace import (
    AnswerFinished,
    AnswerRecord,
    AnswerStarted,
    Event,
    EventCallback,
    RunResult,
    StepFinished,
    StepRecord,
    StepStarted,
    TextWritten,
    Timing,
    Totals,
    cost_parts,
)
from onnx_lm import (
    CausalLM,
    ChatMessage,
    Generation,
    LMContext,
    SessionConfig,
    StopCriteria,
    StopReason,
    TextCodec,
    decode_until,
    entropy_nats,
    make_rng,
    sample_token,
)
from onnx_lm.errors import BadInputError

log = logging.getLogger(__name__)

_SLM_STREAM = 0  # random stream of the SLM's sampling under a seed (the in-process LLM uses 1)


def prompt_messages(question: str, system_prompt: str | None = None) -> list[ChatMessage]:
    """The messages both sides render with their own template; BadInputError for an empty question."""
    if not isinstance(question, str) or not question.strip():
        raise BadInputError("the question is empty; give the text of a question to answer")
    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    return [*system, ChatMessage("user", question)]


def check_prompt_fits(codec: TextCodec, messages: Sequence[ChatMessage]) -> int:
    """Tokens of the rendered prompt; BadInputError when it leaves no room in the SLM's context."""
    tokens = len(codec.encode(codec.render_prompt(messages)))
    limit = codec.manifest.max_context_tokens
    if tokens >= limit:
        raise BadInputError(
            f"the question renders to a prompt of {tokens} tokens, but the small model's context holds "
            f"{limit}; shorten the question"
        )
    return tokens


class EdgeRouter:
    """The device runtime: an ONNX SLM on this machine, an LLM behind `LLMBackend`, one policy.

    Build it with `EdgeRouter.from_folders(slm_dir, llm=..., config=RouterConfig(...))`, then
    call `answer(question)` for each question.
    """

    def __init__(
        self, slm: CausalLM, llm: LLMBackend | None = None, config: RouterConfig | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        _check_llm_given(llm, self.config)
        self.slm = slm
        self.llm = llm
        self.delimiter = self.config.delimiter or slm.manifest.step_delimiter
        self.think_end = slm.manifest.think_end

    @classmethod
    def from_folders(
        cls, slm_dir: Path | str, llm: LLMBackend | None = None, config: RouterConfig | None = None,
        session: SessionConfig | None = None,
    ) -> EdgeRouter:
        """Load the SLM from its exported folder (providers chosen automatically unless `session` says).

        Raises BadInputError for an LLM-role folder or a config that needs an LLM when none is
        given, ModelContractError for a folder that is not an exported model.
        """
        config = config or RouterConfig()
        _check_llm_given(llm, config)
        check_role(slm_dir, "slm")
        return cls(CausalLM.load(slm_dir, session), llm, config)

    def answer(
        self, question: str, *, on_event: EventCallback | None = None, rng: np.random.Generator | None = None,
    ) -> RunResult:
        """Reason about `question` step by step, routing each step, then write the final answer.

        `on_event` receives the run as it happens (steps starting, text as it is written, steps
        and the answer finished). `rng` overrides the SLM's random stream (default: from the seed
        in `config.steps`). Raises BadInputError for an empty question or one longer than the
        SLM's context (before any model work), NotAuthorizedError when the cloud refuses the token.
        """
        messages = prompt_messages(question, self.config.system_prompt)
        check_prompt_fits(self.slm.tokenizer, messages)
        return _QuestionRun(self, messages, on_event, rng).run(question)


def _check_llm_given(llm: LLMBackend | None, config: RouterConfig) -> None:
    if llm is None and config.needs_llm:
        raise BadInputError(
            f"policy {config.policy.name!r} with answer_by={config.answer_by!r} needs an LLM: give one "
            "(a Triton URL or a local LLM folder), or use the local policy with answer_by='slm'"
        )


@dataclass
class _StepBuilder:
    """What a step has cost so far, while it is being written."""

    index: int
    entropy_nats: float
    decision: Decision
    slm_prefill_tokens: int
    started: float  # perf_counter at the start of the step
    edge_s: float = 0.0
    writer: str = "edge"
    verdict: str = ""
    text: str = ""
    stop: str = "delimiter"
    slm_tokens: int = 0
    llm_tokens: int = 0
    wasted_tokens: int = 0
    llm_prefill_tokens: int = 0
    costs: list[CallCost] = field(default_factory=list)
    error: str = ""
    signal: float | None = None
    signal_name: str = ""

    def finish(self) -> StepRecord:
        timing, traffic = cost_parts(self.costs)
        timing = Timing(self.edge_s, timing.network_s, timing.cloud_queue_s, timing.cloud_compute_s,
                        time.perf_counter() - self.started)
        decision = f"draft:{self.verdict}" if self.verdict else self.decision.route.value
        signal = self.signal if self.verdict else self.decision.signal
        signal_name = self.signal_name if self.verdict else self.decision.signal_name
        return StepRecord(
            self.index, self.writer, self.entropy_nats, decision, signal_name, signal, self.text, self.stop,
            self.slm_tokens, self.llm_tokens, self.wasted_tokens, self.slm_prefill_tokens,
            self.llm_prefill_tokens, timing, traffic, self.error,
        )


class _QuestionRun:
    """The state of one question: the SLM's context, the LLM conversation, the transcript."""

    def __init__(
        self, router: EdgeRouter, messages: list[ChatMessage], on_event: EventCallback | None,
        rng: np.random.Generator | None,
    ) -> None:
        self.router = router
        self.config = router.config
        self.settings = router.config.steps
        self.sampling = self.settings.sampling
        self.slm = router.slm
        self.rng = rng if rng is not None else make_rng(self.sampling, _SLM_STREAM)
        self.prompt = self.slm.tokenizer.render_prompt(messages)
        self.ctx = LMContext(self.slm)
        self.messages = messages
        self.on_event = on_event
        self.conversation: LLMConversation | None = None
        self.cloud_down = ""  # why the conversation could not be opened
        self.transcript = ""
        self.steps: list[StepRecord] = []
        self.budget_used = 0
        stops = [router.delimiter] + ([router.think_end] if router.think_end else [])
        self.stop_strings = tuple(stops)

    # ---- phases ----------------------------------------------------------------------------

    def run(self, question: str) -> RunResult:
        started = time.perf_counter()
        self._open_conversation()
        try:
            thinking_stop = self._think()
            self._close_thinking(thinking_stop)
            answer = self._answer()
        finally:
            if self.conversation is not None:
                self.conversation.close()
        totals = Totals.of(self.steps, answer, time.perf_counter() - started)
        llm = self.router.llm
        providers = {"slm": self.slm.provider.name}
        if llm is not None:
            providers["llm"] = str(getattr(llm, "provider", llm.name))
        return RunResult(
            question, answer.text, answer.writer, thinking_stop, self.transcript + answer.text,
            tuple(self.steps), answer, totals, self.config.policy.describe(), providers,
        )

    def _open_conversation(self) -> None:
        llm = self.router.llm
        if llm is None or not self.config.needs_llm:
            return
        try:
            self.conversation = llm.open(self.messages)
        except CloudUnavailableError as exc:
            log.warning("cloud unavailable, the SLM carries on alone: %s", exc)
            self.cloud_down = str(exc)

    def _think(self) -> str:
        """Write steps until thinking ends; return why it ended."""
        index = 0
        while True:
            if self.budget_used >= self.settings.budget_tokens:
                return "budget"
            max_tokens = self._step_limit(index)
            if max_tokens < 1:
                return "context"
            if index:
                self.transcript += self.router.delimiter
                if self.steps[-1].writer != "cloud":
                    self._push_context()
            record = self._step(index, max_tokens)
            self.steps.append(record)
            self._emit(StepFinished(record))
            self.budget_used += record.step_tokens
            self.transcript += record.text
            if record.stop in ("think_end", "eos"):
                return record.stop
            if index and record.text == self.steps[-2].text:
                return "repeat"
            index += 1

    def _close_thinking(self, thinking_stop: str) -> None:
        """Make sure the transcript ends with the end-of-thinking marker before the answer."""
        think_end = self.router.think_end
        if think_end and thinking_stop != "think_end":
            self.transcript += self.router.delimiter + think_end

    def _answer(self) -> AnswerRecord:
        writer = self.config.answer_by
        if writer == "none":
            return AnswerRecord("none", "", "skipped", 0)
        started = time.perf_counter()
        if writer == "slm":
            return self._slm_answer("edge", started)
        costs: list[CallCost] = []
        request = LLMRequest(LLMAction.WRITE_ANSWER, self.transcript, self.sampling, (),
                             self.settings.answer_max_tokens)
        try:
            reply = self._call(request, costs)
        except CloudUnavailableError as exc:
            log.warning("cloud unavailable for the final answer, the SLM writes it: %s", exc)
            return self._slm_answer("degraded", started, error=str(exc), costs=costs)
        self._emit(AnswerStarted("cloud"))
        self._emit(TextWritten(reply.text))
        timing, traffic = cost_parts(costs)
        timing = Timing(0.0, timing.network_s, timing.cloud_queue_s, timing.cloud_compute_s,
                        time.perf_counter() - started)
        tokens = reply.cost.decode_tokens
        record = AnswerRecord("cloud", reply.text, reply.stop_reason, tokens, timing, traffic)
        self._emit(AnswerFinished(record))
        return record

    def _slm_answer(
        self, writer: str, started: float, error: str = "", costs: Sequence[CallCost] = (),
    ) -> AnswerRecord:
        cloud_timing, traffic = cost_parts(costs)
        edge_started = time.perf_counter()
        self._emit(AnswerStarted(writer))
        room = self._context_room(self.prompt + self.transcript)
        if room < 1:
            text, stop, tokens, edge_s = "", "context", 0, 0.0
        else:
            self.ctx.sync(self.prompt + self.transcript)
            criteria = StopCriteria((), min(self.settings.answer_max_tokens, room))
            gen = decode_until(self.ctx, self.sampling, criteria, self.rng, on_text=self._stream)
            text, stop, tokens = gen.text, gen.stop_reason.value, gen.num_tokens
            edge_s = time.perf_counter() - edge_started
        timing = Timing(edge_s, cloud_timing.network_s, cloud_timing.cloud_queue_s,
                        cloud_timing.cloud_compute_s, time.perf_counter() - started)
        record = AnswerRecord(writer, text, stop, tokens, timing, traffic, error)
        self._emit(AnswerFinished(record))
        return record

    # ---- one step --------------------------------------------------------------------------

    def _step(self, index: int, max_tokens: int) -> StepRecord:
        started = time.perf_counter()
        sync = self.ctx.sync(self.prompt + self.transcript)
        logits = self.ctx.next_logits
        entropy = entropy_nats(logits)
        probe = sample_token(logits, self.sampling, self.rng)
        decision = self.config.policy.before_step(Probe(index, entropy, probe))
        step = _StepBuilder(index, entropy, decision, sync.prefill_tokens, started)
        step.edge_s = time.perf_counter() - started
        if decision.route == Route.EDGE:
            self._write_edge(step, probe, max_tokens, "edge")
        elif decision.route == Route.CLOUD:
            self._write_cloud(step, probe, max_tokens)
        else:
            self._write_draft(step, probe, max_tokens)
        return step.finish()

    def _write_edge(self, step: _StepBuilder, probe: int, max_tokens: int, writer: str) -> None:
        """The SLM writes the step, continuing from the probe token (kept, not sampled again)."""
        step.writer = writer
        self._emit(StepStarted(step.index, writer, step.entropy_nats))
        gen = decode_until(self.ctx, self.sampling, StopCriteria(self.stop_strings, max_tokens), self.rng,
                           first_token=probe, on_text=self._stream)
        self._take_slm_text(step, gen)
        if step.stop == "think_end":
            self._emit(TextWritten(self.router.think_end or ""))

    def _write_cloud(self, step: _StepBuilder, probe: int, max_tokens: int) -> None:
        """The LLM writes the step; the probe is discarded (or kept if the cloud is unavailable)."""
        request = self._step_request(max_tokens)
        try:
            reply = self._call(request, step.costs)
        except CloudUnavailableError as exc:
            log.warning("step %d: cloud unavailable, the SLM writes it (degraded): %s", step.index, exc)
            step.error = str(exc)
            self._write_edge(step, probe, max_tokens, "degraded")
            return
        step.slm_tokens += 1  # the probe: the one SLM token a cloud step wastes
        step.wasted_tokens += 1
        self._take_cloud_text(step, reply)
        self._emit(StepStarted(step.index, "cloud", step.entropy_nats))
        self._emit(TextWritten(step.text))

    def _write_draft(self, step: _StepBuilder, probe: int, max_tokens: int) -> None:
        """The SLM drafts the whole step; the policy keeps it or has the LLM rewrite it."""
        gen = decode_until(self.ctx, self.sampling, StopCriteria(self.stop_strings, max_tokens), self.rng,
                           first_token=probe, record_entropy=True)
        self._take_slm_text(step, gen)
        draft = Draft(step.text, tuple(gen.entropies))
        try:
            judgement = self.config.policy.after_draft(draft, self._scorer(step))
        except CloudUnavailableError as exc:
            log.warning("step %d: cloud unavailable to judge the draft, kept (degraded): %s", step.index, exc)
            step.writer, step.error, step.verdict = "degraded", str(exc), Verdict.ACCEPT.value
            self._emit_whole_step(step)
            return
        step.verdict, step.signal = judgement.verdict.value, judgement.signal
        step.signal_name = judgement.signal_name
        if judgement.verdict == Verdict.REWRITE:
            self._rewrite(step, gen, max_tokens)
        else:
            step.writer = "edge"
        self._emit_whole_step(step)

    def _rewrite(self, step: _StepBuilder, draft: Generation, max_tokens: int) -> None:
        draft_text, draft_stop = step.text, step.stop
        request = self._step_request(max_tokens)
        try:
            reply = self._call(request, step.costs)
        except CloudUnavailableError as exc:
            log.warning("step %d: cloud unavailable to rewrite, draft kept (degraded): %s", step.index, exc)
            step.writer, step.error, step.text, step.stop = "degraded", str(exc), draft_text, draft_stop
            return
        step.wasted_tokens += draft.num_tokens
        self._take_cloud_text(step, reply)

    def _scorer(self, step: _StepBuilder) -> Scorer:
        def score(candidate: str) -> float:
            request = LLMRequest(LLMAction.SCORE, self.transcript, self.sampling, candidate=candidate)
            reply = self._call(request, step.costs)
            if reply.mean_logprob is None:
                raise BadInputError(f"the LLM backend {self.router.llm!r} returned no score for a SCORE call")
            return reply.mean_logprob

        return score

    # ---- helpers ---------------------------------------------------------------------------

    def _push_context(self) -> None:
        """Let a backend that syncs in the background (`push`) send the SLM's steps now.

        Called at the start of a step, with the delimiter already appended: every later call's
        transcript extends what is pushed, so the cloud never has to be resent anything.
        """
        push = getattr(self.conversation, "push", None)
        if push is not None:
            push(self.transcript)

    def _step_request(self, max_tokens: int) -> LLMRequest:
        return LLMRequest(LLMAction.WRITE_STEP, self.transcript, self.sampling, self.stop_strings, max_tokens)

    def _call(self, request: LLMRequest, costs: list[CallCost]) -> LLMReply:
        """One LLM call; its cost (or, if it fails, the time lost waiting) goes to `costs`."""
        if self.conversation is None:
            raise CloudUnavailableError(self.cloud_down or "no LLM conversation is open")
        started = time.perf_counter()
        try:
            reply = self.conversation.call(request)
        except CloudUnavailableError:
            costs.append(CallCost(round_trip_s=time.perf_counter() - started))
            raise
        costs.append(reply.cost)
        return reply

    def _take_slm_text(self, step: _StepBuilder, gen: Generation) -> None:
        step.slm_tokens += gen.num_tokens  # the probe is gen.token_ids[0]
        step.edge_s += gen.decode_s
        step.text, step.stop = gen.text, self._stop_kind(gen.stop_reason.value, gen.stop_string)
        if step.stop == "think_end":
            step.text += self.router.think_end or ""

    def _take_cloud_text(self, step: _StepBuilder, reply: LLMReply) -> None:
        step.writer = "cloud"
        step.llm_tokens += reply.cost.decode_tokens
        step.llm_prefill_tokens += reply.cost.prefill_tokens
        step.text, step.stop = reply.text, self._stop_kind(reply.stop_reason, reply.stop_string)
        if step.stop == "think_end":
            step.text += self.router.think_end or ""

    def _stop_kind(self, stop_reason: str, stop_string: str | None) -> str:
        if stop_reason == StopReason.STOP_STRING.value:
            think_end = self.router.think_end
            return "think_end" if think_end and stop_string == think_end else "delimiter"
        return "eos" if stop_reason == StopReason.EOS.value else "max_tokens"

    def _step_limit(self, index: int) -> int:
        """Tokens the next step may take: the step cap, the budget left, the SLM context left."""
        pending = self.prompt + self.transcript + (self.router.delimiter if index else "")
        # Keep room for the marker the loop may append when thinking ends without one.
        closing = self.router.delimiter + (self.router.think_end or "")
        room = self._context_room(pending) - len(self.slm.tokenizer.encode(closing))
        budget_left = self.settings.budget_tokens - self.budget_used
        return min(self.settings.max_step_tokens, budget_left, room)

    def _context_room(self, text: str) -> int:
        """Tokens that still fit in the SLM's context after `text`."""
        return self.slm.manifest.max_context_tokens - len(self.slm.tokenizer.encode(text))

    def _emit_whole_step(self, step: _StepBuilder) -> None:
        self._emit(StepStarted(step.index, step.writer, step.entropy_nats))
        self._emit(TextWritten(step.text))

    def _stream(self, text: str) -> None:
        self._emit(TextWritten(text))

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
