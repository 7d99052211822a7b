"""`python -m bench.scale`: affinity vs round robin over N replicas behind nginx, and a failover.

Three scenarios, each on a fresh fleet (empty caches): `affinity` (consistent hash on the
context header), `round_robin` (nginx's default: a context's steps scatter), and
`affinity_kill` (one replica SIGKILLed once a quarter of the calls are done, restarted at once on
its port). Writes `run.json` (machine, command, every figure) and `README.md` (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e.machine import machine_info, now_utc
from bench.scale.workload import CallRecord, Workload, load_problems
from cloud_service.balancer.fleet import FleetConfig, LocalFleet
from cloud_service.balancer.nginx_config import AFFINITY, ROUND_ROBIN
from cloud_service.launcher import remove_shm_files
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class KillPlan:
    """Kill replica `victim` when the run reaches `at_call` calls; restart it at once."""

    fleet: LocalFleet
    victim: int
    at_call: int
    killed_at: float | None = None  # wall clock (time.time(): nginx's access log speaks epoch)
    restart_s: float | None = None
    _thread: threading.Thread | None = None

    def __call__(self, calls: int) -> None:
        if calls < self.at_call or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._kill_and_restart, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the restart (the fleet must not stop under it)."""
        if self._thread is not None:
            self._thread.join()

    def _kill_and_restart(self) -> None:
        server = self.fleet.replicas[self.victim]
        assert server.pid is not None
        self.killed_at = time.time()
        if server.gateway is not None:  # the gateway lives in this process: a host crash takes both
            server.gateway.stop(grace_s=0)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10.0)
        remove_shm_files(server.config.shm_prefix)
        self.restart_s = self.fleet.restart(self.victim)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models/toy-pair/llm")
    parser.add_argument("--problems", type=Path, default=ROOT / "models/toy-pair/data/test.jsonl")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--problems-per-session", type=int, default=12)
    parser.add_argument("--scenarios", default="affinity,round_robin,affinity_kill")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale-out")
    return parser.parse_args(argv)


def run_scenario(name: str, args: argparse.Namespace, problems: list[dict[str, Any]]) -> dict[str, Any]:
    token = new_token()
    policy = ROUND_ROBIN if name == ROUND_ROBIN else AFFINITY
    settings = RepositorySettings(link_model=True, intra_op_threads=1)
    config = FleetConfig(args.replicas, token, policy=policy, settings=settings)
    with tempfile.TemporaryDirectory(prefix="glimp_scale_") as work, \
            LocalFleet(args.model, work, config, startup_timeout_s=120.0, stop_timeout_s=10.0) as fleet:
        workload = Workload(fleet.endpoint, token, problems, args.sessions, args.problems_per_session)
        kill = None
        if name == "affinity_kill":
            expected = sum(len(p["steps"]) + 1 for p in problems[: args.sessions * args.problems_per_session])
            kill = KillPlan(fleet, victim=0, at_call=expected // 4)
        seconds = workload.run(on_call=kill)
        if kill is not None:
            kill.join()
        assert fleet.balancer is not None
        access = parse_access_log(fleet.balancer.layout.access_log.read_text(encoding="utf-8"))
        victim_addr = fleet.replicas[0].grpc_url
    summary = summarize(name, workload, seconds, access)
    if kill is not None:
        summary["failover"] = failover(workload.calls, access, kill, victim_addr)
    return summary


def parse_access_log(text: str) -> list[tuple[float, str, int, str, str]]:
    """(epoch s, upstream that answered, status, uri, context) per ModelInfer line."""
    rows = []
    for line in text.splitlines():
        parts = line.split(" ")
        msec, status, uri, context = parts[0], parts[-4], parts[-3], parts[-2]
        upstreams = " ".join(parts[1:-4]).replace(",", " ").split()
        if uri.endswith("/ModelInfer") and upstreams:
            rows.append((float(msec), upstreams[-1], int(status), uri, context))
    return rows


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(name: str, workload: Workload, seconds: float, access: list[Any]) -> dict[str, Any]:
    calls = workload.calls
    trips = [c.round_trip_s for c in calls]
    questions = [q.seconds for q in workload.questions if q.completed]
    served = {addr for _, addr, _, _, _ in access}
    return {
        "scenario": name, "seconds": round(seconds, 2), "calls": len(calls),
        "questions": len(workload.questions), "questions_completed": len(questions),
        "errors": sorted({q.error for q in workload.questions if not q.completed}),
        "reused_tokens_per_call": round(statistics.fmean(c.reused_tokens for c in calls), 2),
        "prefill_tokens_per_call": round(statistics.fmean(c.prefill_tokens for c in calls), 2),
        "bytes_up_per_call": round(statistics.fmean(c.bytes_up for c in calls), 1),
        "resync_share": round(sum(c.resynced for c in calls) / len(calls), 4),
        "calls_per_s": round(len(calls) / seconds, 2), "questions_per_s": round(len(questions) / seconds, 3),
        "call_p50_ms": round(1000 * _p(trips, 0.5), 1), "call_p95_ms": round(1000 * _p(trips, 0.95), 1),
        "question_p95_s": round(_p(questions, 0.95), 3), "replicas_serving": len(served),
    }


def failover(calls: list[CallRecord], access: list[Any], kill: KillPlan, victim: str) -> dict[str, Any]:
    """Resends after the kill, per context, split by where the context lived and by phase.

    The outage ends when the restarted replica answers its first balanced call (nginx's access
    log); contexts the ring gives it move back then, and a context resent once at the kill and
    once at the return is expected.
    """
    assert kill.killed_at is not None
    killed = kill.killed_at
    before = {ctx: addr for stamp, addr, status, _, ctx in access if stamp < killed and status == 200}
    back = [stamp for stamp, addr, status, _, _ in access
            if stamp > killed and addr == victim and status == 200]
    healthy = min(back) if back else float("inf")
    live = {c.context_id for c in calls if c.ended_epoch_s > killed} & set(before)
    on_victim = {ctx for ctx in live if before[ctx] == victim}

    def resends(contexts: set[str], start: float, end: float) -> list[int]:
        counts = dict.fromkeys(contexts, 0)
        for c in calls:
            if c.context_id in counts and c.resynced and start <= c.ended_epoch_s < end:
                counts[c.context_id] += 1
        return list(counts.values())

    outage_victim = resends(on_victim, killed, healthy)
    outage_rest = resends(live - on_victim, killed, healthy)
    returned = {c.context_id for c in calls if c.resynced and c.ended_epoch_s >= healthy}
    served_after = {ctx: addr for stamp, addr, status, _, ctx in access if stamp >= healthy and status == 200}
    return {
        "killed_replica": victim,
        "restart_to_ready_s": round(kill.restart_s or float("nan"), 2),
        "kill_to_ring_healthy_s": round(healthy - killed, 2) if back else None,
        "contexts_live_across_the_kill": len(live),
        "of_them_on_the_killed_replica": len(on_victim),
        "outage_resends_per_context_on_killed_replica": sorted(set(outage_victim)),
        "outage_resends_of_other_contexts": sum(outage_rest),
        "resends_after_the_return": sum(c.resynced for c in calls if c.ended_epoch_s >= healthy),
        "contexts_resent_after_the_return": len(returned),
        "of_them_now_on_the_restarted_replica": sum(served_after.get(ctx) == victim for ctx in returned),
        "resends_total": sum(c.resynced for c in calls),
    }


def table(summaries: list[dict[str, Any]]) -> str:
    head = ("| scenario | questions done | reused KV tokens / call | prefill tokens / call | uplink B / call "
            "| resends / call | calls/s | p50 / p95 call | p95 question |")
    rows = [head, "|" + "---|" * 9]
    for s in summaries:
        rows.append(
            f"| {s['scenario']} | {s['questions_completed']}/{s['questions']} "
            f"| {s['reused_tokens_per_call']} "
            f"| {s['prefill_tokens_per_call']} | {s['bytes_up_per_call']} | {s['resync_share']} "
            f"| {s['calls_per_s']} | {s['call_p50_ms']} / {s['call_p95_ms']} ms | {s['question_p95_s']} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("cloud_service.launcher").setLevel(logging.ERROR)  # the killed replica's log tail
    args = parse_args(argv)
    problems = load_problems(args.problems, args.sessions * args.problems_per_session)
    started = now_utc()
    summaries = [run_scenario(name, args, problems) for name in args.scenarios.split(",")]
    record = {
        "started_utc": started, "finished_utc": now_utc(), "machine": machine_info(),
        "command": "python -m bench.scale " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: str(v) for k, v in vars(args).items()}, "scenarios": summaries,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(table(summaries))
    for s in summaries:
        if "failover" in s:
            print(json.dumps(s["failover"], indent=2))
    return 0
