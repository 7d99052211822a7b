"""`python -m bench.engines`: the onnx engine against the vllm engine at 1 / 8 / 16 / 32 sessions.

Each engine gets one server, started the way `glimp serve` starts it (the gateway, a token, the
engine's repository and Python), and the same workload at every level: N sessions, each an edge
device with its own resilient link, answering toy problems one WRITE_STEP per line, every step
sent to the cloud (bench/scale/workload.py). The levels use disjoint problems, so no level reuses
another's contexts. Per level: calls/s, p50 / p95 call latency, p95 question latency, reused and
prefilled tokens per call (the server's own counts), and throughput as a ratio of one session;
per engine: start to ready and the peak memory of the server and every process it started.
Writes run.json and README.md to --out; the figures are printed too.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.e2e.machine import machine_info, now_utc
from bench.scale.run import summarize
from bench.scale.workload import Workload, load_problems
from cloud_service.engine_choice import VLLM, choose_engine
from cloud_service.launcher import ServerConfig, TritonServer, pick_free_port
from cloud_service.repository import RepositorySettings, build_repository
from cloud_service.security import new_token
from cloud_service.vllm import repository as vllm_repository
from cloud_service.vllm.server import descendants

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"onnx": ROOT / "models/toy-pair/llm", "vllm": ROOT / "models/toy-pair/llm-hf",
          "vllm-ngram": ROOT / "models/toy-pair/llm-hf"}  # vllm with speculative decoding by n-gram
SPECULATIVE = {"vllm-ngram": vllm_repository.NGRAM}
TOY_PROMPT = "Q:{question}\n"  # the toy LLM's prompt (its checkpoint has no chat template)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="onnx,vllm")
    parser.add_argument("--sessions", default="1,8,16,32", help="concurrent sessions per level")
    parser.add_argument("--problems-per-session", type=int, default=3)
    parser.add_argument("--problems", type=Path, default=ROOT / "models/toy-pair/data/test.jsonl")
    parser.add_argument("--cache-budget-mb", type=float, default=1024.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/engines")
    return parser.parse_args(argv)


@contextmanager
def engine_server(name: str, work: Path, token: str, cache_budget_mb: float) -> Iterator[TritonServer]:
    """A started server for engine `name` on the toy pair's LLM, as `glimp serve` would run it."""
    model = MODELS[name]
    engine = choose_engine(model, VLLM if name in SPECULATIVE else name)
    budget = int(cache_budget_mb * (1 << 20))
    if engine.name == VLLM:
        settings = vllm_repository.VllmSettings(kv_cache_bytes=budget, prompt_template=TOY_PROMPT,
                                                link_model=True, speculative=SPECULATIVE.get(name))
        repository = vllm_repository.build_repository(model, work / "repository", settings, force=True)
    else:
        onnx_settings = RepositorySettings(cache_budget_bytes=budget, link_model=True)
        repository = build_repository(model, work / "repository", onnx_settings, force=True)
    config = ServerConfig(repository, grpc_port=pick_free_port(), metrics_port=pick_free_port(), token=token,
                          startup_timeout_s=600.0, python_bin=engine.python_bin, decoupled=engine.decoupled)
    with TritonServer(config) as server:  # started on entry, stopped on exit
        yield server


class PeakMemory:
    """The largest RSS sum of a process and its descendants, sampled twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_bytes, self.processes = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = descendants(self.pid, include_self=True)
            total = sum(_rss_bytes(pid) for pid in pids)
            if total > self.peak_bytes:
                self.peak_bytes, self.processes = total, len(pids)
            self._stop.wait(0.5)


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_engine(name: str, args: argparse.Namespace, problems: list[dict[str, Any]]) -> dict[str, Any]:
    token = new_token()
    levels = [int(n) for n in args.sessions.split(",")]
    with tempfile.TemporaryDirectory(prefix=f"glimp_engines_{name}_") as work, \
            engine_server(name, Path(work), token, args.cache_budget_mb) as server:
        print(f"{name}: ready in {server.ready_s:.1f} s", flush=True)
        assert server.pid is not None
        rows, offset = [], 0
        with PeakMemory(server.pid) as memory:
            for sessions in levels:
                count = sessions * args.problems_per_session
                chosen = problems[offset:offset + count]
                offset += count
                workload = Workload(server.grpc_url, token, chosen, sessions, args.problems_per_session)
                seconds = workload.run()
                row = summarize(f"{name} x{sessions}", workload, seconds, access=[])
                row.pop("replicas_serving")
                row["sessions"] = sessions
                rows.append(row)
                print(f"  {sessions:>2} sessions: {row['calls_per_s']} calls/s, p50 {row['call_p50_ms']} ms, "
                      f"p95 {row['call_p95_ms']} ms, errors {row['errors']}", flush=True)
        spec = _speculation(server.metrics_url)
    one = rows[0]["calls_per_s"]
    for row in rows:
        row["throughput_vs_1_session"] = round(row["calls_per_s"] / one, 2)
    return {"engine": name, "model": str(MODELS[name].relative_to(ROOT)), "start_to_ready_s": server.ready_s,
            "peak_rss_bytes": memory.peak_bytes, "peak_processes": memory.processes, "levels": rows,
            "speculation": spec}


def _speculation(metrics_url: str) -> dict[str, float] | None:
    """Proposed / accepted tokens of speculative decoding from the metrics page (None: not served)."""
    page = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = r"^glimp_spec_{}_tokens_total\{{[^}}]*\}} (\S+)$"
    found = {name: re.findall(pattern.format(name), page, flags=re.MULTILINE)
             for name in ("draft", "accepted")}
    if not all(found.values()):
        return None
    draft, accepted = float(found["draft"][0]), float(found["accepted"][0])
    return {"draft_tokens": draft, "accepted_tokens": accepted,
            "acceptance_rate": round(accepted / draft, 4) if draft else 0.0}


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| engine | sessions | questions done | calls/s | vs 1 session | p50 / p95 call | p95 question "
            "| reused / prefilled tokens per call |", "|" + "---|" * 8]
    for result in results:
        for r in result["levels"]:
            rows.append(f"| {result['engine']} | {r['sessions']} "
                        f"| {r['questions_completed']}/{r['questions']} "
                        f"| {r['calls_per_s']} | {r['throughput_vs_1_session']}x "
                        f"| {r['call_p50_ms']} / {r['call_p95_ms']} ms | {r['question_p95_s']} s "
                        f"| {r['reused_tokens_per_call']} / {r['prefill_tokens_per_call']} |")
    rows.append("")
    for result in results:
        peak_gib = result["peak_rss_bytes"] / (1 << 30)
        spec = result["speculation"]
        accepted = ""
        if spec and spec["draft_tokens"]:
            accepted = (f"; speculation: {spec['accepted_tokens']:.0f} of {spec['draft_tokens']:.0f} "
                        f"proposed tokens accepted ({100 * spec['acceptance_rate']:.1f} %)")
        rows.append(f"- {result['engine']}: start to ready {result['start_to_ready_s']:.1f} s; peak RSS "
                    f"of the server's {result['peak_processes']} processes {peak_gib:.2f} GiB{accepted}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    levels = [int(n) for n in args.sessions.split(",")]
    problems = load_problems(args.problems, sum(levels) * args.problems_per_session)
    started = now_utc()
    results = [run_engine(name, args, problems) for name in args.engines.split(",")]
    record = {
        "started_utc": started, "finished_utc": now_utc(), "machine": machine_info(),
        "command": "python -m bench.engines " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: str(v) for k, v in vars(args).items()}, "engines": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    return 0
