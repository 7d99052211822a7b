"""`glimp api` itself: its flags, its bad input, and a real server started by the real command."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import MODEL, TOY_LLM, TOY_SLM, user
from openai import OpenAI

from cloud_service.launcher import pick_free_port
from glimprouter.cli import main

HEAVY = ("torch", "tritonclient", "grpc", "fastapi", "uvicorn", "cloud_service")


def test_the_command_module_imports_no_server_stack_until_it_serves() -> None:
    code = ("import sys, edge_client.api.command; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def test_help_shows_the_endpoint_and_routing_flags_but_no_question(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["api", "--help"])
    out = capsys.readouterr().out
    for flag in ("--port", "--host", "--api-key-file", "--offline-ok", "--price-in-per-m", "--llm-url",
                 "--tau"):
        assert flag in out
    assert "--json" not in out and "question" not in out and "--api-key " not in out


@pytest.mark.parametrize(("argv", "says"), [
    ([], "no SLM folder"),
    (["--slm", str(TOY_SLM)], "needs the large model"),
    (["--slm", str(TOY_LLM), "--llm-local", str(TOY_LLM)], "swap the two folders"),
    (["--slm", str(TOY_SLM), "--llm-local", str(TOY_LLM), "--api-key-file", "/nonexistent/key"],
     "does not exist"),
    (["--slm", str(TOY_SLM), "--llm-local", str(TOY_LLM), "--price-in-per-m", "-1"], "price"),
])
def test_bad_input_is_refused_before_serving(argv: list[str], says: str, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIMP_SLM", raising=False)
    assert main(["api", *argv]) == 2
    assert says in capsys.readouterr().err


@pytest.fixture()
def command_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`glimp api` in a subprocess with a key file; (base url, key). Stopped (by its pid) at the end."""
    key_file = tmp_path / "api.key"
    key_file.write_text("k-123\n", encoding="utf-8")
    port = pick_free_port()
    argv = [sys.executable, "-m", "glimprouter.cli", "api", "--slm", str(TOY_SLM), "--llm-local",
            str(TOY_LLM), "--providers", "cpu", "--port", str(port), "--api-key-file", str(key_file),
            "--seed", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the port is bound and the models are loaded
        assert f"http://127.0.0.1:{port}/v1" in line, line
        yield f"http://127.0.0.1:{port}/v1", "k-123"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_command_serves_the_openai_client(command_server: tuple[str, str]) -> None:
    url, key = command_server
    client = OpenAI(base_url=url, api_key=key, max_retries=8)  # retries cover uvicorn's last bind moment
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = client.chat.completions.create(model=MODEL, messages=user())
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert reply.choices[0].message.content and (reply.usage.model_extra or {})["glimp"]["steps"]


def test_a_port_in_use_is_one_line_before_any_model_loads() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "glimprouter.cli", "api", "--slm", str(TOY_SLM), "--llm-local",
                str(TOY_LLM), "--providers", "cpu", "--port", str(port)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "serving" not in done.stdout  # it never claimed to serve
    assert done.stderr.strip().splitlines()[-1] == (
        f"glimp api: error: port {port} on 127.0.0.1 is in use: stop what holds it, or pick another with "
        "--port (env GLIMP_API_PORT)")
