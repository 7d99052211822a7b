"""`Conversation`: a multi-turn chat with the router, each turn continuing what both sides hold.

    from edge_client import Conversation, EdgeRouter

    router = EdgeRouter.from_folders("models/toy-pair/slm", llm=connect("host:8001", token))
    with Conversation(router) as chat:
        first = chat.ask("12+7*3-5")
        second = chat.ask("3*4+1")  # the SLM's KV and the cloud context of turn 1 carry on

A turn is the whole history so far (each side renders it with its own template: Qwen3's drops
the earlier turns' reasoning) plus the new question. The SLM keeps its KV cache's common token
prefix, the cloud context is continued with only the new message sent (`EdgeRouter.turn`). A turn
that fails or is interrupted (Ctrl-C) leaves the history as it was; the next one starts over from
it. `reset()` forgets the history; `close()` (or the `with` block's end) frees the cloud context.
"""

from __future__ import annotations

from types import TracebackType

import numpy as np

from edge_client.loop import Continuation, EdgeRouter, prompt_messages
from edge_client.trace import EventCallback, RunResult
from onnx_lm import ChatMessage


class Conversation:
    """The history of one chat and what the router holds of it; not thread-safe (one turn at a time)."""

    def __init__(self, router: EdgeRouter, system_prompt: str | None = None) -> None:
        self.router = router
        self.system_prompt = system_prompt if system_prompt is not None else router.config.system_prompt
        self._messages: tuple[ChatMessage, ...] = self._start()
        self._held: Continuation | None = None
        self.continued = False  # whether the last turn continued the one before (False: it started over)

    @property
    def messages(self) -> tuple[ChatMessage, ...]:
        """The history: the system prompt if any, then each turn's question and answer."""
        return self._messages

    @property
    def turns(self) -> int:
        return sum(1 for m in self._messages if m.role == "assistant")

    def ask(
        self, question: str, *, on_event: EventCallback | None = None, rng: np.random.Generator | None = None,
    ) -> RunResult:
        """Answer `question` as the next turn; errors as `EdgeRouter.answer` (BadInputError when the
        history and the question no longer fit the SLM's context: `reset()` and ask again)."""
        question_message = prompt_messages(question)[-1]  # an empty question fails here
        messages = (*self._messages, question_message)
        held, self._held = self._held, None  # a failed turn closes what it held
        turn = self.router.turn(messages, follows=held, on_event=on_event, rng=rng)
        self._held, self.continued = turn.continuation, turn.continued
        self._messages = turn.continuation.history
        return turn.result

    def reset(self) -> None:
        """Forget the history (the system prompt stays) and free what the router held of it."""
        self._close_held()
        self._messages = self._start()
        self.continued = False

    def close(self) -> None:
        self._close_held()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _start(self) -> tuple[ChatMessage, ...]:
        return (ChatMessage("system", self.system_prompt),) if self.system_prompt else ()

    def _close_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()
