"""`glimp chat`: a multi-turn conversation in the terminal, each turn continuing what both sides hold.

    glimp chat --slm models/toy-pair/slm --llm-url HOST:PORT [--system "..."]

Every flag of `glimp run` that picks the models, the link, the routing and the sampling applies,
with the same environment twins. Each turn streams its steps marked by who wrote them, then the
answer, the split and the cost (with prices from --price-in-per-m / --price-out-per-m or their
environment twins). Line editing and history come from readline where Python has it.

    /reset   start a new conversation (the system prompt stays)
    /quit    end the session (so does Ctrl-D)
    Ctrl-C   stops the turn being written; the conversation stays as it was before that turn

Exit codes: 0 the session ended, 2 bad input or a cloud error at the start (as `glimp run`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from edge_client import run_command
from edge_client.console import StreamPrinter, render_summary
from edge_client.conversation import Conversation
from edge_client.cost import Prices
from edge_client.errors import CloudError
from edge_client.loop import EdgeRouter
from glimp_common.env import env_str
from glimp_common.errors import BadInputError
from onnx_lm import SessionConfig

PROMPT = "you> "
HELP = "/reset starts a new conversation, /quit or Ctrl-D ends the session, Ctrl-C stops a turn"
Reader = Callable[[str], str]  # input(): raises EOFError at the end, KeyboardInterrupt on Ctrl-C


def configure_parser(parser: argparse.ArgumentParser) -> None:
    run_command.add_router_flags(parser)
    run_command.add_price_flags(parser)
    parser.add_argument("--system", default=env_str("GLIMP_SYSTEM_PROMPT"),
                        help="system prompt of the conversation (env GLIMP_SYSTEM_PROMPT)")


def run(args: argparse.Namespace) -> int:
    # The CLI blocked SIGINT before importing this module (glimprouter/cli.py): every thread started
    # so far has it blocked. Ctrl-C is this (the main) thread's to take.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    config = run_command.router_config(args)
    run_command.check_models(args, config)
    session = SessionConfig(providers=args.providers, spin_wait=args.spin_wait)
    with _ctrl_c_left_to_this_thread():
        llm = run_command.llm_backend(args, session, start_check=True) if config.needs_llm else None
    try:
        with _ctrl_c_left_to_this_thread():
            router = EdgeRouter.from_folders(args.slm, llm, config, session)
        with Conversation(router, args.system) as chat:
            _line_editing()
            Repl(chat, run_command.prices(args), input, sys.stdout, sys.stderr).loop()
    finally:
        if llm is not None:
            llm.close()
    return 0


class Repl:
    """Reads a line, answers it as the conversation's next turn, shows the turn; until /quit or EOF."""

    def __init__(self, chat: Conversation, prices: Prices | None, read: Reader, out: TextIO,
                 err: TextIO) -> None:
        self.chat, self.prices, self.read, self.out, self.err = chat, prices, read, out, err

    def loop(self) -> None:
        self._say(f"glimp chat: {HELP}")
        while True:
            try:
                line = self.read(PROMPT).strip()
            except EOFError:  # Ctrl-D
                self._say("")
                return
            except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, as a shell does
                self._say("")
                continue
            if line in ("/quit", "/exit"):
                return
            if line == "/reset":
                self.chat.reset()
                self._say("(a new conversation)")
            elif line.startswith("/"):
                self._say(f"unknown command {line.split()[0]}: {HELP}")
            elif line:
                self._turn(line)

    def _turn(self, question: str) -> None:
        try:
            result = self.chat.ask(question, on_event=StreamPrinter(self.out))
        except KeyboardInterrupt:
            self._say(f"\n(turn stopped; the conversation is as it was before it, {self.chat.turns} turns)")
            return
        except (BadInputError, CloudError) as exc:
            self.err.write(f"glimp chat: error: {exc}\n")
            self.err.flush()
            return
        how = "continued" if self.chat.continued else "new context"
        self._say(f"answer: {result.answer.strip()}")
        self._say(f"turn {self.chat.turns} ({how}): {render_summary(result, self.prices)}")

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


@contextlib.contextmanager
def _ctrl_c_left_to_this_thread() -> Iterator[None]:
    """Inside, SIGINT is blocked in this (the main) thread, so every thread started meanwhile (gRPC's,
    the link's health monitor, ONNX Runtime's pool) inherits it blocked and Ctrl-C always lands
    here. A SIGINT taken by another thread would leave the prompt's read blocked: Python would
    raise KeyboardInterrupt only once a line came, and that line would be lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _line_editing() -> None:
    """Line editing and history for input() on a terminal (readline is absent on some builds)."""
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it is what turns line editing on)
