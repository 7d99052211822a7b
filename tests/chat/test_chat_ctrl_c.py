"""Ctrl-C in `glimp chat` on a real terminal: at the prompt it gives a fresh line, during a turn it
stops that turn and leaves the conversation as it was; the session goes on and Ctrl-D ends it.

The chat runs on a pty (so Ctrl-C is the terminal's SIGINT to its foreground group, as a user's
key is) against a real tritonserver behind the project's link emulator. The link turns slow (1.5 s
round trip) once the chat is up, so a cloud turn is still in flight when the key comes.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.api.common import TOY_LLM, TOY_SLM
from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from netem import LinkEmulator, LinkProfile

pytestmark = [pytest.mark.triton, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SLOW = LinkProfile(rtt_s=1.5, bandwidth_mbit_s=0.0, name="slow")


class Terminal:
    """A child process on a pty: what it wrote so far, and keys typed into it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            os.chdir(ROOT)
            # A test run started in the background (`cmd &` in a script, as CI may) has SIGINT
            # ignored, exec keeps it ignored and Python then installs no KeyboardInterrupt: give
            # the chat the disposition a user's terminal gives it.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(argv[0], argv, env)
        self.seen = ""
        self.log: list[str] = []  # what each expect matched, for a failure's message

    def expect(self, text: str, timeout_s: float = 90.0) -> str:
        """Read until `text` appears after what was already matched; the output up to it."""
        deadline = time.monotonic() + timeout_s
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"{text!r} not shown in {timeout_s} s; it showed:\n{self.history()}")
            try:
                self.seen += os.read(self.fd, 4096).decode(errors="replace")
            except OSError:  # the child closed the pty
                raise AssertionError(f"the chat ended before {text!r}:\n{self.history()}") from None
        shown, _, self.seen = self.seen.partition(text)
        self.log.append(shown + text)
        return shown

    def history(self) -> str:
        return "".join(self.log) + "<<< not matched: >>>" + self.seen

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout_s: float = 60.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with_output = select.select([self.fd], [], [], 0.2)[0]
            if with_output:
                with contextlib.suppress(OSError):  # the child closed the pty
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"the chat did not end within {timeout_s} s; it showed:\n{self.history()}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LinkEmulator, str]]:
    """(the emulated link to it, edge token) of the toy LLM on a real tritonserver."""
    token = new_token()
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    repo = tmp_path_factory.mktemp("chat_repo")
    with local_server(TOY_LLM, repo, token=token, settings=settings) as server:
        host, port = server.grpc_url.rsplit(":", 1)
        with LinkEmulator(host, int(port), LinkProfile.loopback()) as link:
            yield link, token


@pytest.fixture()
def chat(cloud: tuple[LinkEmulator, str]) -> Iterator[Terminal]:
    link, token = cloud
    link.set_profile(LinkProfile.loopback())
    argv = [sys.executable, "-m", "glimprouter.cli", "chat", "--slm", str(TOY_SLM), "--providers", "cpu",
            "--llm-url", link.address, "--policy", "cloud", "--seed", "0", "--temperature", "0"]
    # The token goes in the environment, never on the command line (where `ps` shows it).
    terminal = Terminal(argv, {**os.environ, "GLIMP_EDGE_TOKEN": token, "TERM": "dumb"})
    try:
        yield terminal
    finally:
        terminal.close()


def test_ctrl_c_stops_a_cloud_turn_and_the_chat_goes_on(chat: Terminal,
                                                        cloud: tuple[LinkEmulator, str]) -> None:
    chat.expect("you> ")  # the start check has passed
    cloud[0].set_profile(SLOW)
    chat.type("\x03")  # at the prompt: a fresh line, nothing else
    chat.expect("you> ")
    chat.type("12+7*3-5\r")
    chat.expect("12+7*3-5")  # the terminal's echo: the line was read and the turn has begun
    time.sleep(0.5)  # its first cloud step is a 1.5 s round trip away
    chat.type("\x03")
    chat.expect("(turn stopped; the conversation is as it was before it, 0 turns)")
    chat.expect("you> ")
    # The stopped turn's cloud context is being closed by the link's closer thread, started after
    # the start-up's mask was lifted: Ctrl-C at the prompt must still reach the main thread.
    chat.type("\x03")
    chat.expect("you> ")
    chat.type("3*4+1\r")
    shown = chat.expect("you> ", timeout_s=120)
    assert "answer: " in shown and "turn 1 (new context)" in shown  # the stopped turn left nothing held
    assert "[cloud H=" in shown
    chat.type("\x04")  # Ctrl-D ends the session
    assert chat.wait() == 0
