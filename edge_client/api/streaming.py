"""The loop's events as chat-completion deltas: the steps as `reasoning_content`, the answer as `content`.

Text is passed on as it is written, on either side (an SLM step token by token, a cloud step
whole), with two holds, each released as soon as it is decided:
  * the end of a reasoning step could be the start of the end-of-thinking marker, which is not
    part of the reasoning (vLLM's reasoning parsers drop it too);
  * the end of the answer could be the start of a stop string; at a stop string the answer ends.
Steps are joined by the step delimiter, exactly as they are in the loop's transcript.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_client.trace import AnswerStarted, Event, RunResult, StepStarted, TextWritten


@dataclass(frozen=True)
class Delta:
    """A piece of the completion: `kind` is "reasoning_content" or "content"."""

    kind: str
    text: str
    writer: str  # "edge" | "cloud" | "degraded"
    step: int | None  # the reasoning step's index; None for the answer


def held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker` (0 when none)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class StopFilter:
    """Passes the answer on until its first stop string; `stopped` once one is found."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` that is certainly before any stop string."""
        if self.stopped:
            return ""
        pending = self.held + text
        cuts = [pending.find(stop) for stop in self.stops if stop in pending]
        if cuts:
            self.stopped, self.held = True, ""
            return pending[: min(cuts)]
        hold = max((held_prefix(pending, stop) for stop in self.stops), default=0)
        self.held = pending[len(pending) - hold:]
        return pending[: len(pending) - hold]

    def flush(self) -> str:
        """The answer is over: what was held was no stop string after all."""
        held, self.held = self.held, ""
        return "" if self.stopped else held


class DeltaWriter:
    """Turns one run's events into deltas (`feed` per event, `flush` when the run ends)."""

    def __init__(self, delimiter: str, think_end: str | None, stops: tuple[str, ...]) -> None:
        self.delimiter = delimiter
        self.think_end = think_end or ""
        self.answer = StopFilter(stops)
        self.in_answer = False
        self.held = ""  # the end of the reasoning that may be the end-of-thinking marker
        self.writer = "edge"
        self.step: int | None = None

    def feed(self, event: Event) -> list[Delta]:
        if isinstance(event, StepStarted):
            out = self._release_reasoning(final=False)
            self.writer, self.step = event.writer, event.index
            return out + (self._reasoning(self.delimiter) if event.index else [])
        if isinstance(event, AnswerStarted):
            out = self._release_reasoning(final=True)
            self.in_answer, self.writer, self.step = True, event.writer, None
            return out
        if isinstance(event, TextWritten):
            if self.in_answer:
                return self._content(self.answer.feed(event.text))
            return self._reasoning(event.text)
        return []

    def flush(self) -> list[Delta]:
        """Text still held when the run ends."""
        if self.in_answer:
            return self._content(self.answer.flush())
        return self._release_reasoning(final=True)

    def _reasoning(self, text: str) -> list[Delta]:
        pending = self.held + text
        hold = held_prefix(pending, self.think_end) if self.think_end else 0
        if self.think_end and pending.endswith(self.think_end):
            hold = len(self.think_end)
        self.held = pending[len(pending) - hold:]
        return self._delta("reasoning_content", pending[: len(pending) - hold])

    def _release_reasoning(self, *, final: bool) -> list[Delta]:
        """Between steps nothing more is coming for the held end; at the answer, drop the marker."""
        held, self.held = self.held, ""
        if final and self.think_end and held == self.think_end:
            return []
        return self._delta("reasoning_content", held)

    def _content(self, text: str) -> list[Delta]:
        return self._delta("content", text)

    def _delta(self, kind: str, text: str) -> list[Delta]:
        return [Delta(kind, text, self.writer, self.step)] if text else []


def answer_as_sent(answer: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """(the answer up to its first stop string, whether one was found): what the client receives."""
    cut = StopFilter(stops)
    return cut.feed(answer) + cut.flush(), cut.stopped


def whole_texts(result: RunResult, delimiter: str, think_end: str | None, stops: tuple[str, ...]) -> tuple[
        str, str, bool]:
    """(reasoning, answer, stopped) of a finished run, as its stream would have delivered them."""
    reasoning = delimiter.join(step.text for step in result.steps)
    if think_end and reasoning.endswith(think_end):
        reasoning = reasoning[: -len(think_end)]
    content, stopped = answer_as_sent(result.answer, stops)
    return reasoning, content, stopped
