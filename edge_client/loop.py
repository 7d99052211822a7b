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

The conversation is handed the transcript (`push`, a no-op unless the backend syncs in the
background) at the start of each step that follows an SLM-written one, so the cloud absorbs the
SLM's text while the SLM keeps working.

A cloud call that fails with `CloudUnavailableError` is not fatal: the SLM writes that step (or
the answer) and the trace marks it "degraded". `NotAuthorizedError` and other cloud errors are
not hidden: they propagate.

This module holds the phases; each route's writer is in `edge_client.writers`, the answer in
`edge_client.answer`, the state they share in `edge_client.question`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_client.answer import AnswerWriter
from edge_client.cloud_session import CloudSession
from edge_client.config import RouterConfig
from edge_client.in_process_llm import check_role
from edge_client.llm_backend import LLMBackend, LLMConversation
from edge_client.policies import Probe, Route
from edge_client.question import QuestionState
from edge_client.step import StepStart, step_record
from edge_client.trace import EventCallback, RunResult, StepFinished, StepRecord, Totals
from edge_client.writers import CloudWriter, DraftWriter, EdgeWriter, StepWriter
from glimp_common.errors import BadInputError
from onnx_lm import (
    SLM_STREAM,
    CausalLM,
    ChatMessage,
    LMContext,
    SessionConfig,
    TextCodec,
    entropy_nats,
    make_rng,
    sample_token,
)


def prompt_messages(question: str, system_prompt: str | None = None) -> list[ChatMessage]:
    """The messages both sides render with their own template; BadInputError for an empty question."""
    if not isinstance(question, str) or not question.strip():
        raise BadInputError("the question is empty; give the text of a question to answer")
    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    return [*system, ChatMessage("user", question)]


# The least a prompt must leave free in the SLM's context, besides the end-of-thinking marker:
# a step (capped by max_step_tokens) and an answer (capped by answer_max_tokens). Small enough
# for the toy pair's 128-token context (its steps are ~9 tokens, its answers ~4), large enough
# that a question which leaves less is refused up front instead of ending in an empty answer.
MIN_STEP_TOKENS = 16
MIN_ANSWER_TOKENS = 8


def answer_reserve(config: RouterConfig) -> int:
    """Tokens the steps leave free in the SLM's context for the answer (0 when none is written)."""
    return 0 if config.answer_by == "none" else min(config.steps.answer_max_tokens, MIN_ANSWER_TOKENS)


def reasoning_room(codec: TextCodec, config: RouterConfig) -> int:
    """Tokens a prompt must leave free: one step, the end-of-thinking marker, a minimal answer."""
    delimiter = config.delimiter or codec.manifest.step_delimiter
    closing = len(codec.encode(delimiter + (codec.manifest.think_end or "")))
    return min(config.steps.max_step_tokens, MIN_STEP_TOKENS) + closing + answer_reserve(config)


def check_prompt_fits(
    codec: TextCodec, messages: Sequence[ChatMessage], config: RouterConfig | None = None,
) -> int:
    """Tokens of the rendered prompt; BadInputError when it leaves no room to reason and answer.

    The room is `reasoning_room(codec, config)` (default config: `RouterConfig()`), checked
    before any model work: a prompt that fits but leaves no step and no answer room would only
    fill the context mid-reasoning and end in an empty answer.
    """
    tokens = len(codec.encode(codec.render_prompt(messages)))
    limit = codec.manifest.max_context_tokens
    room = reasoning_room(codec, config or RouterConfig())
    if tokens + room > limit:
        raise BadInputError(
            f"the question renders to a prompt of {tokens} tokens and reasoning needs {room} more (one "
            f"step, the end-of-thinking marker and a short answer), but the small model's context "
            f"holds {limit}; shorten the question"
        )
    return tokens


@dataclass
class Continuation:
    """What a finished turn leaves for the next one: the conversation so far and what each side holds.

    Hand it to `EdgeRouter.turn(..., follows=it)` with the next turn's messages: the SLM continues
    from its KV cache (the common token prefix is kept) and the LLM's context continues with only
    the new messages sent (`LLMConversation.next_turn`). Hold it only while the conversation may
    go on, and `close()` it when it cannot: it keeps an SLM KV cache and a cloud context alive.
    """

    messages: tuple[ChatMessage, ...]  # the turn's messages
    answer: str  # the assistant's reply as the user got it (set it to what was shown, if cut)
    slm_ctx: LMContext  # the SLM's cache after the turn
    cloud: LLMConversation | None  # the LLM's context, still open; None without one

    @property
    def history(self) -> tuple[ChatMessage, ...]:
        """The conversation so far: the turn's messages and the assistant's reply."""
        return (*self.messages, ChatMessage("assistant", self.answer))

    def continued_by(self, messages: Sequence[ChatMessage]) -> bool:
        """Whether `messages` are this history followed by at least one more message."""
        history = self.history
        return len(messages) > len(history) and tuple(messages[: len(history)]) == history

    def close(self) -> None:
        """Free the LLM's context (best effort); the SLM's cache goes with this object."""
        if self.cloud is not None:
            cloud, self.cloud = self.cloud, None
            cloud.close()


@dataclass(frozen=True)
class Turn:
    """One turn's run, and what it leaves for the next turn (close it if there is none)."""

    result: RunResult
    continuation: Continuation
    continued: bool  # this turn continued a held conversation (False: it started over)


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
        SLM's context (before any model work), NotAuthorizedError when the cloud refuses the token,
        CloudUnreachableError when the cloud does not answer at the start (unless the link
        allows a run that starts offline). A context that fills up mid-reasoning is no error:
        `thinking_stop` is then "context".
        """
        messages = prompt_messages(question, self.config.system_prompt)
        check_prompt_fits(self.slm.tokenizer, messages, self.config)
        # One question: the cloud context is closed inside the run (the link sends the CLOSE in the
        # background; with TritonLLM(background_close=False) its round trip is in the wall time).
        return _QuestionRun(self, messages, on_event, rng).run(question, keep=False)[0]

    def turn(
        self, messages: Sequence[ChatMessage], *, follows: Continuation | None = None,
        on_event: EventCallback | None = None, rng: np.random.Generator | None = None,
    ) -> Turn:
        """Answer the last message of a conversation (a chat history, rendered whole by each side).

        `follows` is the previous turn's continuation: when `messages` continue its history the
        run starts from what both sides hold (the turn takes it over); otherwise (an edited
        history) it is closed and the turn starts over. The returned continuation keeps the LLM's
        context open for the next turn: pass it on, or close it. Errors as `answer`; a failed
        turn closes what it held.
        """
        if follows is not None and not follows.continued_by(messages):
            follows.close()
            follows = None
        try:
            check_prompt_fits(self.slm.tokenizer, messages, self.config)
        except BaseException:
            if follows is not None:
                follows.close()
            raise
        run = _QuestionRun(self, list(messages), on_event, rng, follows)
        return Turn(*run.run(messages[-1].content, keep=True), continued=follows is not None)


def _check_llm_given(llm: LLMBackend | None, config: RouterConfig) -> None:
    if llm is None and config.needs_llm:
        raise BadInputError(
            f"policy {config.policy.name!r} with answer_by={config.answer_by!r} needs an LLM: give one "
            "(a Triton URL or a local LLM folder), or use the local policy with answer_by='slm'"
        )


class _QuestionRun:
    """One question's phases: think (glimpse, route, write each step), close thinking, answer."""

    def __init__(
        self, router: EdgeRouter, messages: list[ChatMessage], on_event: EventCallback | None,
        rng: np.random.Generator | None, follows: Continuation | None = None,
    ) -> None:
        self.router = router
        self.config = router.config
        self.settings = router.config.steps
        self.messages = messages
        self.follows = follows
        slm, sampling = router.slm, self.settings.sampling
        stops = [router.delimiter] + ([router.think_end] if router.think_end else [])
        # Each turn draws from its own seed's stream, held or not: a request answers the same either way.
        self.q = QuestionState(
            slm, follows.slm_ctx if follows is not None else LMContext(slm),
            slm.tokenizer.render_prompt(messages), sampling,
            rng if rng is not None else make_rng(sampling, SLM_STREAM), tuple(stops), router.think_end,
            CloudSession(router.llm if self.config.needs_llm else None), on_event,
        )
        edge = EdgeWriter(self.q)
        cloud = CloudWriter(self.q, edge)
        self.writers: dict[Route, StepWriter] = {
            Route.EDGE: edge, Route.CLOUD: cloud, Route.DRAFT: DraftWriter(self.q, self.config.policy, cloud),
        }
        self.steps: list[StepRecord] = []
        self.budget_used = 0

    def run(self, question: str, *, keep: bool) -> tuple[RunResult, Continuation]:
        """The turn's result and continuation; `keep` leaves the LLM's context open in it."""
        started = time.perf_counter()
        self._open_cloud()
        try:
            thinking_stop = self._think()
            self._close_thinking(thinking_stop)
            answer = AnswerWriter(self.q, self.config.answer_by, self.settings.answer_max_tokens).write()
        except BaseException:
            self.q.cloud.close()  # a failed or cancelled turn leaves nothing to continue
            raise
        if not keep:
            self.q.cloud.close()
        totals = Totals.of(self.steps, answer, time.perf_counter() - started)
        result = RunResult(
            question, answer.text, answer.writer, thinking_stop, self.q.transcript + answer.text,
            tuple(self.steps), answer, totals, self.config.policy.describe(), self._providers(),
        )
        q = self.q
        return result, Continuation(tuple(self.messages), answer.text, q.ctx, q.cloud.conversation)

    def _open_cloud(self) -> None:
        """The LLM's context: the held one continued with the new messages, or a new one."""
        held = self.follows.cloud if self.follows is not None else None
        if held is None or self.follows is None:
            self.q.cloud.open(self.messages)
            return
        new = self.messages[len(self.follows.history):]
        self.q.cloud.resume(held, self.follows.answer, new)

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
                self.q.transcript += self.router.delimiter
                if self.steps[-1].writer != "cloud":
                    self.q.cloud.push(self.q.transcript)
            record = self._step(index, max_tokens)
            self.steps.append(record)
            self.q.emit(StepFinished(record))
            self.budget_used += record.step_tokens
            self.q.transcript += record.text
            if record.stop in ("think_end", "eos"):
                return record.stop
            if index and record.text == self.steps[-2].text:
                return "repeat"
            index += 1

    def _step(self, index: int, max_tokens: int) -> StepRecord:
        """Glimpse the step's first token, let the policy route it, let that route's writer write it."""
        q = self.q
        started = time.perf_counter()
        sync = q.sync()
        logits = q.ctx.next_logits
        entropy = entropy_nats(logits)
        probe = sample_token(logits, q.sampling, q.rng)
        decision = self.config.policy.before_step(Probe(index, entropy, probe))
        step = StepStart(index, entropy, probe, decision, sync.prefill_tokens, started,
                         time.perf_counter() - started)
        return step_record(step, self.writers[decision.route].write(step, max_tokens))

    def _close_thinking(self, thinking_stop: str) -> None:
        """Make sure the transcript ends with the end-of-thinking marker before the answer."""
        think_end = self.router.think_end
        if think_end and thinking_stop != "think_end":
            self.q.transcript += self.router.delimiter + think_end

    def _step_limit(self, index: int) -> int:
        """Tokens the next step may take: the step cap, the budget left, the SLM context left."""
        pending = self.q.prompt + self.q.transcript + (self.router.delimiter if index else "")
        # Keep room for the marker the loop may append when thinking ends without one, and for a
        # short answer: a full context must not leave the answer empty.
        closing = self.router.delimiter + (self.router.think_end or "")
        reserve = len(self.q.slm.tokenizer.encode(closing)) + answer_reserve(self.config)
        room = self.q.context_room(pending) - reserve
        budget_left = self.settings.budget_tokens - self.budget_used
        return min(self.settings.max_step_tokens, budget_left, room)

    def _providers(self) -> dict[str, str]:
        providers = {"slm": self.q.slm.provider.name}
        if self.router.llm is not None:
            providers["llm"] = self.router.llm.provider
        return providers
