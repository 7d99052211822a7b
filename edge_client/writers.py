"""Who writes a routed step: one writer per route, each returning the step's outcome.

- `EdgeWriter` (EDGE): the SLM continues from the probe token, which is kept (the same
  distribution as sampling it again);
- `CloudWriter` (CLOUD): the LLM writes the step; the probe is the one wasted SLM token;
- `DraftWriter` (DRAFT): the SLM writes the whole step, then the policy ACCEPTs it or has the
  LLM REWRITE it (through `CloudWriter`; the draft's tokens count as wasted).

An unavailable cloud degrades the step to the SLM (`cloud_or_degraded`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from edge_client.cloud_session import cloud_or_degraded
from edge_client.llm_backend import CallCost
from edge_client.policies import Draft, RoutingPolicy, Scorer, Verdict
from edge_client.question import QuestionState
from edge_client.step import StepOutcome, StepStart
from edge_client.trace import StepStarted, TextPreview, TextWritten
from onnx_lm import Generation, StopCriteria, decode_until


class StepWriter(Protocol):
    def write(self, step: StepStart, max_tokens: int) -> StepOutcome: ...


def slm_outcome(q: QuestionState, gen: Generation, writer: str) -> StepOutcome:
    """A step the SLM wrote (`gen.token_ids[0]` is the probe)."""
    stop = q.stop_kind(gen.stop_reason.value, gen.stop_string)
    return StepOutcome(writer, q.marked(gen.text, stop), stop, slm_tokens=gen.num_tokens, edge_s=gen.decode_s)


def emit_whole_step(q: QuestionState, step: StepStart, outcome: StepOutcome) -> None:
    """Announce a step written before it was shown (by the LLM, or a judged draft)."""
    q.emit(StepStarted(step.index, outcome.writer, step.entropy_nats))
    q.emit(TextWritten(outcome.text))


class EdgeWriter:
    """The SLM writes the step, streaming it, continuing from the probe (kept, not sampled again)."""

    def __init__(self, q: QuestionState) -> None:
        self.q = q

    def write(self, step: StepStart, max_tokens: int, writer: str = "edge") -> StepOutcome:
        q = self.q
        q.emit(StepStarted(step.index, writer, step.entropy_nats))
        gen = decode_until(q.ctx, q.sampling, StopCriteria(q.stop_strings, max_tokens), q.rng,
                           first_token=step.probe, on_text=q.stream)
        outcome = slm_outcome(q, gen, writer)
        if outcome.stop == "think_end":
            q.emit(TextWritten(q.think_end or ""))
        return outcome


class CloudWriter:
    """The LLM writes the step; the probe is discarded (or kept by the SLM if the cloud is unavailable)."""

    def __init__(self, q: QuestionState, edge: EdgeWriter) -> None:
        self.q = q
        self.edge = edge

    def write(self, step: StepStart, max_tokens: int) -> StepOutcome:
        costs: list[CallCost] = []

        def by_cloud() -> StepOutcome:
            # The probe: the one SLM token a cloud step wastes.
            probe_only = StepOutcome("cloud", "", "", slm_tokens=1, wasted_tokens=1)
            outcome = self.by_llm(probe_only, max_tokens, costs, preview=step)
            emit_whole_step(self.q, step, outcome)
            return outcome

        def by_edge(error: str) -> StepOutcome:
            return replace(self.edge.write(step, max_tokens, "degraded"), error=error)

        what = f"step {step.index}: cloud unavailable, the SLM writes it (degraded)"
        return replace(cloud_or_degraded(by_cloud, by_edge, what), costs=tuple(costs))

    def rewrite(
        self, step: StepStart, draft: StepOutcome, max_tokens: int, costs: list[CallCost],
    ) -> StepOutcome:
        """The LLM writes the step instead of a rejected draft, whose tokens are then wasted."""
        wasted = replace(draft, wasted_tokens=draft.wasted_tokens + draft.slm_tokens)
        return cloud_or_degraded(
            lambda: self.by_llm(wasted, max_tokens, costs),
            lambda error: replace(draft, writer="degraded", error=error),
            f"step {step.index}: cloud unavailable to rewrite, draft kept (degraded)",
        )

    def by_llm(self, base: StepOutcome, max_tokens: int, costs: list[CallCost],
               preview: StepStart | None = None) -> StepOutcome:
        """`base` with the LLM's step as its text (raises CloudUnavailableError). With `preview`,
        a streaming cloud's pieces are shown as TextPreview events while the step is written."""
        request = self.q.step_request(max_tokens)
        if preview is not None and self.q.on_event is not None:
            step = preview
            request = replace(request, on_text=lambda text: self.q.emit(
                TextPreview(step.index, step.entropy_nats, text)))
        reply = self.q.cloud.call(request, costs)
        stop = self.q.stop_kind(reply.stop_reason, reply.stop_string)
        return replace(
            base, writer="cloud", text=self.q.marked(reply.text, stop), stop=stop,
            llm_tokens=base.llm_tokens + reply.cost.decode_tokens,
            llm_prefill_tokens=base.llm_prefill_tokens + reply.cost.prefill_tokens,
            cloud_first_text_s=reply.cost.first_text_s,
        )


class DraftWriter:
    """The SLM drafts the whole step; the policy keeps it or has the LLM rewrite it."""

    def __init__(self, q: QuestionState, policy: RoutingPolicy, cloud: CloudWriter) -> None:
        self.q = q
        self.policy = policy
        self.cloud = cloud

    def write(self, step: StepStart, max_tokens: int) -> StepOutcome:
        q = self.q
        gen = decode_until(q.ctx, q.sampling, StopCriteria(q.stop_strings, max_tokens), q.rng,
                           first_token=step.probe, record_entropy=True)
        draft = slm_outcome(q, gen, "edge")
        costs: list[CallCost] = []
        outcome = cloud_or_degraded(
            lambda: self._judged(step, draft, Draft(draft.text, tuple(gen.entropies)), max_tokens, costs),
            lambda error: replace(draft, writer="degraded", error=error, verdict=Verdict.ACCEPT.value),
            f"step {step.index}: cloud unavailable to judge the draft, kept (degraded)",
        )
        emit_whole_step(q, step, outcome)
        return replace(outcome, costs=tuple(costs))

    def _judged(
        self, step: StepStart, outcome: StepOutcome, draft: Draft, max_tokens: int, costs: list[CallCost],
    ) -> StepOutcome:
        judgement = self.policy.after_draft(draft, self._scorer(costs))
        judged = replace(outcome, verdict=judgement.verdict.value, signal=judgement.signal,
                         signal_name=judgement.signal_name)
        if judgement.verdict == Verdict.REWRITE:
            return self.cloud.rewrite(step, judged, max_tokens, costs)
        return judged

    def _scorer(self, costs: list[CallCost]) -> Scorer:
        def score(candidate: str) -> float:
            return self.q.cloud.score(self.q.transcript, self.q.sampling, candidate, costs)

        return score
