"""The event-to-delta translation on made-up events: holds at the marker and at stop strings."""

from __future__ import annotations

from edge_client.api.streaming import DeltaWriter, StopFilter, held_prefix
from edge_client.trace import AnswerStarted, Event, StepStarted, TextWritten


def run(events: list[Event], stops: tuple[str, ...] = ()) -> tuple[str, str, list[str]]:
    writer = DeltaWriter("\n", "</think>", stops)
    deltas = [d for e in events for d in writer.feed(e)] + writer.flush()
    reasoning = "".join(d.text for d in deltas if d.kind == "reasoning_content")
    content = "".join(d.text for d in deltas if d.kind == "content")
    return reasoning, content, [d.writer for d in deltas]


def test_the_marker_split_over_tokens_is_not_reasoning_and_steps_are_joined() -> None:
    events: list[Event] = [
        StepStarted(0, "edge", 0.1), TextWritten("a<"), TextWritten("b"),
        StepStarted(1, "cloud", 1.2), TextWritten("c</th"), TextWritten("ink>"),
        AnswerStarted("cloud"), TextWritten("42"),
    ]
    reasoning, content, writers = run(events)
    assert reasoning == "a<b\nc" and content == "42"
    assert writers[0] == "edge" and "cloud" in writers


def test_a_stop_string_split_over_pieces_ends_the_answer() -> None:
    events: list[Event] = [AnswerStarted("edge"), TextWritten("ab"), TextWritten("cS"), TextWritten("TOPd")]
    assert run(events, ("STOP",))[1] == "abc"
    almost: list[Event] = [AnswerStarted("edge"), TextWritten("abST"), TextWritten("O")]
    assert run(almost, ("STOP",))[1] == "abSTO"  # held, then released at the end: no stop after all


def test_stop_filter_and_held_prefix() -> None:
    f = StopFilter(("xy", "q"))
    assert f.feed("abx") == "ab" and f.feed("z") == "xz" and f.feed("1q2") == "1" and f.stopped
    assert f.feed("more") == "" and f.flush() == ""
    assert held_prefix("abc</thi", "</think>") == 5 and held_prefix("abc", "</think>") == 0
