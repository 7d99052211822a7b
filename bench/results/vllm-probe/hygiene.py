"""Which processes outlive tritonserver with the vLLM engine? One scenario per run.

    .venv-cloud/bin/python bench/results/vllm-probe/hygiene.py SCENARIO [--no-pdeathsig]

SCENARIO: sigterm-open-stream (SIGTERM while an edge's stream is open), sigterm-closed (no open
stream), sigkill-server (SIGKILL of tritonserver alone), sigkill-stub (SIGKILL of the python stub).
Prints the process tree before, then every second what is still alive (pid, ppid, RSS, command),
for up to 60 s, and kills any survivor at the end (only pids of this server's tree); then lists the
vLLM shared-memory segments this run created and nobody removed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import time
from pathlib import Path

from cloud_service.vllm.repository import VllmSettings, build_repository
from cloud_service.vllm.server import VllmServerConfig, VllmTritonServer, alive, cmdline
from cloud_service.vllm.stream_client import StreamClient
from protos import edge_cloud_v1_pb2 as pb

REPO = Path(__file__).resolve().parents[3]


def describe(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
    except OSError:
        return f"{pid} gone"
    return f"{pid} ppid={ppid} rss={int(rss) // 1024}MB {cmdline(pid)[:90]}"


def psm_files() -> dict[str, int]:
    """multiprocessing.shared_memory segments (vLLM's message queues) in /dev/shm."""
    return {p.name: p.stat().st_size for p in Path("/dev/shm").glob("psm_*")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["sigterm-open-stream", "sigterm-closed", "sigkill-server",
                                             "sigkill-stub"])
    parser.add_argument("--no-pdeathsig", action="store_true")
    parser.add_argument("--exit-timeout", type=int, default=30)
    args = parser.parse_args()
    work = Path(f"/tmp/glimp-vllm-hygiene-{os.getpid()}")
    repository = build_repository(REPO / "models/toy-pair/llm-hf", work / "repository",
                                  VllmSettings(prompt_template="Q:{question}\n", link_model=True,
                                               die_with_parent=not args.no_pdeathsig), force=True)
    server = VllmTritonServer(VllmServerConfig(repository=repository, log_file=work / "tritonserver.log",
                                               exit_timeout_s=args.exit_timeout))
    print(f"scenario {args.scenario}, pdeathsig {'off' if args.no_pdeathsig else 'on'}", flush=True)
    shm_before = set(psm_files())
    print(f"ready in {server.start():.1f} s", flush=True)
    pids = server.tree_pids()
    for pid in pids:
        print("  ", describe(pid))
    client = StreamClient(server.config.grpc_url, timeout_s=600)
    reply = client.call(pb.StepRequest(protocol_version=1, context_id=secrets.token_hex(16),
                                       client_key=secrets.token_bytes(32), create=True,
                                       messages=[pb.ChatMessage(role="user", content="59-7*6+74")],
                                       action=pb.WRITE_STEP, max_tokens=32))
    print("a call:", repr(reply.result.text))
    if args.scenario != "sigterm-open-stream":
        client.close()
    assert server.process is not None
    stub = next(p for p in pids if "triton_python_backend_stub" in cmdline(p))
    t0 = time.perf_counter()
    if args.scenario.startswith("sigterm"):
        os.kill(server.process.pid, signal.SIGTERM)
    elif args.scenario == "sigkill-server":
        os.kill(server.process.pid, signal.SIGKILL)
    else:
        os.kill(stub, signal.SIGKILL)
    server_exit = None
    while time.perf_counter() - t0 < 60:
        time.sleep(1.0)
        if server_exit is None and server.process.poll() is not None:
            server_exit = time.perf_counter() - t0
            print(f"tritonserver exited with {server.process.returncode} after {server_exit:.1f} s")
        left = alive(pids)
        print(f"t+{time.perf_counter() - t0:4.0f}s alive: {len(left)}  " +
              "; ".join(describe(p).split(" ", 1)[1][:60] for p in left if p != server.process.pid))
        if not left or (args.scenario == "sigkill-stub" and left == [server.process.pid]):
            break
    left = [p for p in alive(pids) if p != server.process.pid or args.scenario != "sigkill-stub"]
    print("survivors after the wait:", [describe(p) for p in left] or "none")
    if args.scenario == "sigkill-stub":
        try:
            with StreamClient(server.config.grpc_url, timeout_s=60) as fresh:
                fresh.call(pb.StepRequest(protocol_version=3), timeout_s=30)
        except Exception as exc:
            print("a call after the stub died:", type(exc).__name__, str(exc)[:160])
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)
    if args.scenario == "sigterm-open-stream":
        client.close()
    server.stop(signal.SIGKILL, 10)
    server.cleanup()
    time.sleep(2.0)
    leaked = {name: size for name, size in psm_files().items() if name not in shm_before}
    print("vLLM shared memory (/dev/shm/psm_*) created by this run and left behind:",
          {name: f"{size >> 20} MiB" for name, size in leaked.items()} or "none")


if __name__ == "__main__":
    main()
