"""Time to first token and to the answer, endpoint vs CLI; requests/s at 1 and 8 concurrent clients.

    .venv/bin/python -m bench.api.serving [--repeats 10] [--requests 32] [--json FILE]

One real tritonserver serves the toy LLM; the toy SLM runs on the edge, every way below the same
routing (tau 0.2, greedy, seed 0) and the same question, so each way writes the same steps:
- **endpoint**: `glimp api` in its own process on a loopback port (already started, models
  loaded), asked by the `openai` client with `stream=True`; first token = the first chunk carrying
  text (reasoning or answer), answer = the stream's end.
- **CLI**: `glimp run` as a user starts it, a new process per question; first token = its first
  step line on stdout, answer = its `answer:` line, both from launch (start-up and model loading
  included: what an app that shells out to the CLI waits for).
- **in process**: `EdgeRouter.answer` with an event callback (what both run once started; the CLI's
  own "answered in" time): the floor the other two sit on.
The ways are interleaved repeat by repeat, so load from other work hits them alike; medians shown.

Throughput: `--requests` different toy questions through the endpoint (non-streamed), by 1 and then
by 8 client threads. The endpoint queues runs (one SLM session on the device, see
edge_client/api/engine.py), so 8 clients are expected to gain only the overlap of HTTP and
queueing with the run in progress, and to wait longer each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.api.common import MODEL, ROOT, TOY_LLM, TOY_SLM, client, triton_cloud
from bench.decode.common import machine_info
from cloud_service.launcher import pick_free_port
from edge_client import EdgeRouter, EntropyThreshold, RouterConfig, StepSettings
from edge_client.trace import AnswerStarted, Event, TextWritten
from onnx_lm import CausalLM, SessionConfig

QUESTION = "12+7*3-5"
TAU = 0.2
CONFIG = RouterConfig(policy=EntropyThreshold(TAU), steps=StepSettings(temperature=0.0, seed=0))
PROBLEMS = ROOT / "models" / "toy-pair" / "data" / "test.jsonl"


ROUTING = ["--providers", "cpu", "--tau", str(TAU), "--temperature", "0", "--seed", "0"]


def glimp(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "glimp"), *args]


@contextlib.contextmanager
def api_process(cloud_url: str, token: str) -> Iterator[str]:
    """`glimp api` on a free loopback port, as an app's device runs it: its base URL once healthy."""
    port = pick_free_port()
    command = glimp("api", "--slm", str(TOY_SLM), "--llm-url", cloud_url, "--port", str(port), *ROUTING)
    env = {**os.environ, "GLIMP_EDGE_TOKEN": token}
    with subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL) as process:
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/health", process)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench.api.serving: glimp api exited {process.returncode} before it served")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"bench.api.serving: {url} was not healthy within 120 s")


def endpoint_once(base_url: str) -> dict[str, float]:
    """One streamed completion: seconds to the first text chunk and to the end of the stream."""
    api = client(base_url)
    started = time.perf_counter()
    first = None
    stream = api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                         stream=True, temperature=0.0, seed=0)
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        text = (delta.content or (delta.model_extra or {}).get("reasoning_content")) if delta else None
        if first is None and text:
            first = time.perf_counter() - started
    return {"first_token_s": first or float("nan"), "answer_s": time.perf_counter() - started}


def cli_once(url: str, token: str) -> dict[str, float]:
    """`glimp run` from launch: seconds to its first step line and to its answer line."""
    command = glimp("run", QUESTION, "--slm", str(TOY_SLM), "--llm-url", url, *ROUTING)
    env = {**os.environ, "GLIMP_EDGE_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    first = answer = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as process:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter() - started
            if first is None and line.startswith("["):
                first = now
            if answer is None and line.startswith("answer: "):
                answer = now
    if process.returncode != 0 or first is None or answer is None:
        raise SystemExit(f"bench.api.serving: {' '.join(command)} failed (exit {process.returncode})")
    return {"first_token_s": first, "answer_s": answer}


def in_process_once(router: EdgeRouter) -> dict[str, float]:
    """The loop itself, started: seconds to its first written text and to the answer's end."""
    started = time.perf_counter()
    first: list[float] = []

    def on_event(event: Event) -> None:
        if not first and isinstance(event, TextWritten | AnswerStarted):
            first.append(time.perf_counter() - started)

    router.answer(QUESTION, on_event=on_event)
    return {"first_token_s": first[0], "answer_s": time.perf_counter() - started}


def latency(base_url: str, cloud_url: str, token: str, router: EdgeRouter, repeats: int) -> dict[str, Any]:
    ways: dict[str, list[dict[str, float]]] = {"endpoint": [], "cli": [], "in_process": []}
    endpoint_once(base_url)  # warm the endpoint's HTTP path and the cloud context store
    for _ in range(repeats):
        ways["endpoint"].append(endpoint_once(base_url))
        ways["cli"].append(cli_once(cloud_url, token))
        ways["in_process"].append(in_process_once(router))
    return {way: {key: statistics.median(r[key] for r in runs) for key in ("first_token_s", "answer_s")}
            | {"runs": runs} for way, runs in ways.items()}


def questions(count: int) -> list[str]:
    lines = PROBLEMS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines[:count]]


def throughput(base_url: str, asked: list[str], clients: int) -> dict[str, Any]:
    """`asked` through the endpoint by `clients` threads at once: requests/s and per-request latency."""
    api = client(base_url)

    def ask(question: str) -> float:
        started = time.perf_counter()
        api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                    temperature=0.0, seed=0)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        waits = sorted(pool.map(ask, asked))
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(asked), "wall_s": wall, "requests_per_s": len(asked) / wall,
            "latency_p50_s": statistics.median(waits), "latency_p95_s": waits[int(0.95 * (len(waits) - 1))]}


def report(figures: dict[str, Any]) -> str:
    lat = figures["latency"]
    lines = [f"== time to first token and to the answer, question {QUESTION!r}, median of "
             f"{figures['repeats']} (interleaved)",
             f"{'way':>11} {'first token ms':>15} {'answer ms':>10}"]
    for way in ("endpoint", "cli", "in_process"):
        first, answer = lat[way]["first_token_s"], lat[way]["answer_s"]
        lines.append(f"{way:>11} {1e3 * first:>15.1f} {1e3 * answer:>10.1f}")
    cli, api, loop = lat["cli"], lat["endpoint"], lat["in_process"]
    lines.append(f"endpoint vs CLI: first token {cli['first_token_s'] / api['first_token_s']:.1f}x sooner, "
                 f"answer {cli['answer_s'] / api['answer_s']:.1f}x sooner; the endpoint adds "
                 f"{1e3 * (api['answer_s'] - loop['answer_s']):+.1f} ms per answer to the loop in process")
    lines.append(f"== throughput through the endpoint, {figures['throughput'][0]['requests']} toy questions")
    lines.append(f"{'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for run in figures["throughput"]:
        lines.append(f"{run['clients']:>7} {run['requests_per_s']:>7.2f} {1e3 * run['latency_p50_s']:>8.1f} "
                     f"{1e3 * run['latency_p95_s']:>8.1f}")
    one, eight = figures["throughput"]
    lines.append(f"8 clients vs 1: {eight['requests_per_s'] / one['requests_per_s']:.2f}x requests/s "
                 "(runs are queued: one SLM session)")
    load = figures["load_average_1_5_15"]
    lines.append(f"load average (1 min) before {load['before'][0]:.2f}, after {load['after'][0]:.2f} "
                 "(2 cores; this run's own processes included)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="latency repeats of each way")
    parser.add_argument("--requests", type=int, default=32, help="questions per throughput run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    slm = CausalLM.load(TOY_SLM, SessionConfig(providers="cpu"))  # the session glimp run and api make
    with triton_cloud(TOY_LLM) as cloud, api_process(cloud.url, cloud.token) as base_url:
        router = EdgeRouter(slm, cloud.llm, CONFIG)
        figures: dict[str, Any] = {"repeats": args.repeats,
                                   "latency": latency(base_url, cloud.url, cloud.token, router, args.repeats)}
        asked = questions(args.requests)
        figures["throughput"] = [throughput(base_url, asked, clients) for clients in (1, 8)]
    figures["load_average_1_5_15"] = {"before": load_before, "after": os.getloadavg()}
    figures["machine"] = machine_info("bench.api.serving")
    print(report(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
