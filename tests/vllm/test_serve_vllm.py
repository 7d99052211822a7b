"""`glimp serve CHECKPOINT --engine vllm` as a user runs it, and the edge answering through it.

One `glimp serve` process for the module (the toy LLM's HF checkpoint, a token, speculative
decoding by n-gram, the gateway and supervisor of the onnx engine), reached the way an edge
reaches it: `TritonLink` (which finds the model decoupled and moves to the streaming RPC) and
`glimp run`. The last test stops it with
SIGTERM and checks that nothing it started outlives it.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud_service.engine_choice import cloud_python_bin
from cloud_service.launcher import pick_free_port
from cloud_service.vllm.server import alive, cmdline, descendants
from edge_client import AlwaysCloud, EdgeRouter, Event, RouterConfig, StepSettings, StreamPrinter, connect
from edge_client.errors import CloudRejectedError
from edge_client.link import CloudLinkConfig, TritonLink
from edge_client.trace import StepStarted, TextPreview
from glimp_common.errors import BadInputError
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import PROTOCOL_VERSION, TranscriptDigest, transcript_state

pytestmark = [pytest.mark.vllm, pytest.mark.triton, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GLIMP = Path(sys.executable).with_name("glimp")
TOY_LLM_HF = REPO / "models" / "toy-pair" / "llm-hf"
QUESTION, ANSWER = "10-4*5-20+77", "87"


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    token: str
    banner: list[str]
    metrics_port: int


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    try:
        cloud_python_bin()  # what `glimp serve --engine vllm` needs (GLIMP_CLOUD_VENV, else .venv-cloud)
    except BadInputError as exc:
        pytest.skip(str(exc))
    token = secrets.token_urlsafe(24)
    port, metrics_port = pick_free_port(), pick_free_port()
    env = {**os.environ, "GLIMP_EDGE_TOKEN": token}
    process = subprocess.Popen(
        [str(GLIMP), "serve", str(TOY_LLM_HF), "--engine", "vllm", "--prompt-template", "Q:{question}\\n",
         "--cache-budget-mb", "256", "--speculative", "ngram", "--grpc-port", str(port),
         "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    banner = _read_banner(process)
    try:
        yield Served(process, f"127.0.0.1:{port}", token, banner, metrics_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def _read_banner(process: subprocess.Popen[str]) -> list[str]:
    """The lines `glimp serve` prints up to "Ctrl-C or SIGTERM stops it." (or its error)."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C"):
            return lines
    raise AssertionError(f"glimp serve exited ({process.wait()}) before it was ready:\n" + "\n".join(lines))


def test_serve_names_the_engine_it_chose(served: Served) -> None:
    assert any("ready in" in line and "engine vllm" in line for line in served.banner), served.banner


def test_the_edge_link_moves_to_the_stream_and_gets_refusals_in_band(served: Served) -> None:
    link = TritonLink(CloudLinkConfig(served.url, served.token, timeout_s=120))
    try:
        bad = pb.StepRequest(protocol_version=PROTOCOL_VERSION, context_id=secrets.token_hex(16),
                             client_key=secrets.token_bytes(32), create=True, action=pb.WRITE_STEP,
                             messages=[pb.ChatMessage(role="user", content=QUESTION)], max_tokens=0)
        with pytest.raises(CloudRejectedError, match="max_tokens must be in 1..8192 for a write"):
            link.exchange(bad)
        assert link.streamed, "a decoupled model must move the link to ModelStreamInfer"
        good = pb.StepRequest()
        good.CopyFrom(bad)
        good.max_tokens, good.stream = 32, True
        pieces: list[pb.StepPiece] = []
        done = link.exchange(good, on_piece=pieces.append)
    finally:
        link.close()
    result = done.reply.result
    assert result.text == "6=10-4", result
    assert pieces and "".join(p.text for p in pieces).startswith(result.text)
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert 0 < done.first_text_s < done.round_trip_s
    held = TranscriptDigest([("user", QUESTION)])
    held.extend(result.text)
    assert result.state == transcript_state(held.view(), PROTOCOL_VERSION)


def test_glimp_run_answers_through_the_vllm_cloud(served: Served, tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.json"
    done = subprocess.run(
        [str(GLIMP), "run", QUESTION, "--slm", str(REPO / "models/toy-pair/slm"), "--llm-url", served.url,
         "--policy", "cloud", "--answer-by", "llm", "--temperature", "0", "--json", str(trace_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "GLIMP_EDGE_TOKEN": served.token})
    assert done.returncode == 0, done.stdout + done.stderr
    trace = json.loads(trace_path.read_text())
    steps = trace["steps"]
    assert steps and all(s["writer"] == "cloud" for s in steps), steps
    assert trace["answer_record"]["text"].strip() == ANSWER, trace["answer_record"]
    assert all(s["cloud_first_text_s"] > 0 for s in steps), "every cloud step keeps its time to first text"


def test_the_edge_shows_cloud_steps_as_the_cloud_streams_them(served: Served) -> None:
    """Through the Python API, every step to the cloud: once the link knows the model streams,
    each cloud step arrives as TextPreview pieces before its StepStarted, adding up to its text."""
    events: list[Event] = []
    with connect(served.url, token=served.token) as llm:
        router = EdgeRouter.from_folders(str(REPO / "models/toy-pair/slm"), llm=llm, config=RouterConfig(
            policy=AlwaysCloud(), steps=StepSettings(temperature=0.0, seed=0)))
        result = router.answer(QUESTION, on_event=events.append)
    assert result.answer.strip() == ANSWER
    previews: dict[int, str] = {}
    for event in events:
        if isinstance(event, TextPreview):
            previews[event.index] = previews.get(event.index, "") + event.text
        if isinstance(event, StepStarted):
            assert event.index not in previews or event.writer == "cloud"
    streamed = [s for s in result.steps if s.index in previews]
    assert len(streamed) >= len(result.steps) - 1, previews  # the first call finds out the model streams
    assert all(s.text.startswith(previews[s.index]) and previews[s.index] for s in streamed)
    shown = io.StringIO()
    printer = StreamPrinter(shown)
    for event in events:
        printer(event)
    assert shown.getvalue().count("[cloud H=") == len(result.steps), shown.getvalue()


def test_speculative_decoding_proposed_and_accepted_tokens(served: Served) -> None:
    """After the runs above: n-gram speculation proposed tokens, some accepted (greedy output is the
    model's own either way: the answers above are right)."""
    url = f"http://127.0.0.1:{served.metrics_port}/metrics"
    page = urllib.request.urlopen(url, timeout=10).read().decode()

    def value(name: str) -> float:
        found = re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", page, flags=re.MULTILINE)
        assert found, f"{name} is not on the metrics page"
        return float(found[0])

    drafted, accepted = value("glimp_spec_draft_tokens_total"), value("glimp_spec_accepted_tokens_total")
    assert drafted > 0 and 0 < accepted <= drafted, (drafted, accepted)


def test_a_dead_engine_is_healed_and_its_processes_do_not_linger(served: Served) -> None:
    """SIGKILL vLLM's EngineCore: the supervisor's readiness inference fails, the model is loaded
    again (a new engine), edges are answered again, and the dead engine's Worker is gone."""
    tree = descendants(served.process.pid)
    engines = [pid for pid in tree if "VLLM::EngineCore" in cmdline(pid)]
    workers = [pid for pid in tree if "VLLM::Worker" in cmdline(pid)]
    assert engines and workers, [cmdline(pid) for pid in tree]
    os.kill(engines[0], signal.SIGKILL)
    link = TritonLink(CloudLinkConfig(served.url, served.token, timeout_s=30))
    deadline, answered = time.monotonic() + 240, None
    try:
        while answered is None and time.monotonic() < deadline:
            try:
                answered = link.exchange(pb.StepRequest(
                    protocol_version=PROTOCOL_VERSION, context_id=secrets.token_hex(16),
                    client_key=secrets.token_bytes(32), create=True, action=pb.WRITE_STEP, max_tokens=8,
                    messages=[pb.ChatMessage(role="user", content=QUESTION)]))
            except Exception:  # refused or unavailable while the engine is down and reloading
                time.sleep(1.0)
    finally:
        link.close()
    assert answered is not None and answered.reply.result.text == "6=10-4", "not healed within 240 s"
    assert not alive(workers), [cmdline(pid) for pid in alive(workers)]
    new_engines = [pid for pid in descendants(served.process.pid) if "VLLM::EngineCore" in cmdline(pid)]
    assert new_engines and engines[0] not in new_engines


def test_sigterm_stops_serve_and_every_process_it_started(served: Served) -> None:
    tree = descendants(served.process.pid)
    names = " | ".join(cmdline(pid) for pid in tree)
    assert "tritonserver" in names and "triton_python_backend_stub" in names, names
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(90) == 0
    deadline = time.monotonic() + 30
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(tree), [cmdline(pid) for pid in alive(tree)]
