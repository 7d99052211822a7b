"""A run streamed to its client as server-sent events, with backpressure and cancel-on-disconnect.

The worker thread hands each event over through `call_soon_threadsafe`; it may run at most
`stream_credits` events ahead of what the client has read, so a slow client holds the SLM
(rather than an unbounded buffer), and a client that reads nothing for `stall_timeout_s` is
dropped. When the client disconnects, sse-starlette cancels this generator; its `finally` sets
the run's cancel flag and the loop stops at its next token or cloud call.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from edge_client.api.completion import Completion
from edge_client.api.engine import Engine, Finished, Job
from edge_client.api.errors import GenerationCancelled, api_error
from edge_client.api.streaming import DeltaWriter
from edge_client.trace import Event

_DONE = object()  # the run's future is done


class _Handoff:
    """The worker's `on_event`: waits for a credit, then queues the event on the server's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, credits: int, stall_timeout_s: float) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.credits = threading.Semaphore(credits)
        self.stall_timeout_s = stall_timeout_s
        self.job: Job | None = None

    def __call__(self, event: Event) -> None:
        assert self.job is not None
        deadline = time.monotonic() + self.stall_timeout_s
        while not self.credits.acquire(timeout=0.05):
            if self.job.cancel.is_set():
                raise GenerationCancelled("the client went away")
            if time.monotonic() > deadline:
                self.job.cancel.set()
                raise GenerationCancelled(f"the client read nothing for {self.stall_timeout_s:g} s")
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def done(self, _future: Future[Finished]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, _DONE)


async def stream_run(engine: Engine, completion: Completion, job: Job) -> AsyncIterator[dict[str, str]]:
    """The completion's chunks as SSE `data:` events, ending with `[DONE]` (or an error object)."""
    settings = completion.settings
    handoff = _Handoff(asyncio.get_running_loop(), settings.stream_credits, settings.stall_timeout_s)
    job.on_event, handoff.job = handoff, job
    future = engine.submit(job)
    future.add_done_callback(handoff.done)
    writer = DeltaWriter(engine.delimiter, engine.think_end, completion.request.stop)
    try:
        yield _data(completion.first_chunk())
        while (item := await handoff.queue.get()) is not _DONE:
            handoff.credits.release()
            for delta in writer.feed(item):
                yield _data(completion.delta_chunk(delta))
        error = future.exception()
        if error is not None:
            engine.metrics.requests.labels("error").inc()
            yield _data(api_error(error).body())
            return
        finished = future.result()
        engine.metrics.record_run(finished.result, finished.prompt_tokens, settings.prices)
        engine.metrics.requests.labels("ok").inc()
        for delta in writer.flush():
            yield _data(completion.delta_chunk(delta))
        yield _data(completion.last_chunk(finished, writer.answer.stopped))
        if completion.request.include_usage:
            yield _data(completion.usage_chunk(finished))
        yield {"data": "[DONE]"}
    finally:
        job.cancel.set()  # a no-op once the run is over; stops it when the client went away


def _data(body: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(body, ensure_ascii=False)}

