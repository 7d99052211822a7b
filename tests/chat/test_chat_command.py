"""`glimp chat` as a user drives it: lines on a stdin pipe, and keys on a real terminal (a pty).

The pipe tests run the toy pair in process; the pty test (tests/chat/test_chat_ctrl_c.py) a real
tritonserver behind an emulated slow link.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cloud_service.launcher import pick_free_port

ROOT = Path(__file__).resolve().parents[2]
SLM, LLM = ROOT / "models/toy-pair/slm", ROOT / "models/toy-pair/llm"
GLIMP = [sys.executable, "-m", "glimprouter.cli", "chat", "--slm", str(SLM), "--providers", "cpu",
         "--seed", "0", "--temperature", "0"]


def test_chat_over_a_pipe_continues_turns_resets_and_shows_the_split_and_cost() -> None:
    lines = "12+7*3-5\n3*4+1\n/reset\n9-2*3\n/nope\n\n"
    priced = ["--price-in-per-m", "1", "--price-out-per-m", "4"]
    done = subprocess.run([*GLIMP, "--llm-local", str(LLM), *priced],
                          input=lines, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    turns = re.findall(r"^.*turn (\d+) \((continued|new context)\)", out, re.M)
    assert [(int(n), how) for n, how in turns] == [(1, "new context"), (2, "continued"), (1, "new context")]
    assert out.count("answer: ") == 3 and out.count("cost: ") == 3 and out.count("steps: ") == 3
    assert "(a new conversation)" in out and "unknown command /nope" in out
    assert re.search(r"\[(edge|cloud) H=\d\.\d\d\]", out)  # the steps streamed, marked by writer


def test_chat_refuses_a_missing_slm_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "glimprouter.cli", "chat"], input="", capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "GLIMP_SLM": ""})
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == "glimp chat: error: no SLM folder: give --slm DIR (or GLIMP_SLM)"


def test_chat_against_a_cloud_that_is_down_fails_before_the_first_prompt() -> None:
    port = pick_free_port()  # nothing listens there
    done = subprocess.run([*GLIMP, "--llm-url", f"127.0.0.1:{port}"], input="12+7*3-5\n", capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "you> " not in done.stdout  # no prompt was offered on a cloud that cannot answer
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("glimp chat: error: the cloud at ") and "did not answer the start check" in last
    assert "--offline-ok" in last


def test_chat_with_offline_ok_answers_degraded_on_a_cloud_that_is_down() -> None:
    port = pick_free_port()
    done = subprocess.run([*GLIMP, "--llm-url", f"127.0.0.1:{port}", "--offline-ok", "--answer-by", "slm"],
                          input="12+7*3-5\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "answer: " in done.stdout and "turn 1 (new context)" in done.stdout
