"""`python -m bench.hardening.memory MODEL_DIR --budget-mb 8 64`: the stub's memory against the budget.

Issue 12 found the process RSS at 2.6-2.9x `--cache-budget-mb`. For each budget this starts
MODEL_DIR on a real tritonserver, reads the model stub's resident memory after one warm-up call
(the model loaded: the baseline), then opens contexts of `--context-tokens` tokens through the
edge's link until they would hold `--fill` times the budget, and reads the stub's peak resident
memory (VmHWM). It reports peak - baseline against the budget, and what the cache says it holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from cloud_service.launcher import local_server
from cloud_service.repository import RepositorySettings
from cloud_service.security import new_token
from edge_client.link import CloudLinkConfig, TritonLLM
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage
from onnx_lm.manifest import Manifest

_MIB = 1 << 20
STUB_BINARY = "triton_python_backend_stub.bin"
QUESTION = (ChatMessage("user", "Count."),)


def stub_memory_kib(server_pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of the stub in the server's process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
            pgid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            status = (entry / "status").read_text()
        except OSError:
            continue
        if pgid == server_pid and argv0.endswith(STUB_BINARY.encode()):
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}
    raise RuntimeError(f"no stub found in process group {server_pid}")


def fill(url: str, token: str, contexts: int, transcript: str) -> None:
    """Open `contexts` contexts, each absorbing `transcript` (kept open: the cache holds them)."""
    with TritonLLM(CloudLinkConfig(url, token, timeout_s=120.0)) as llm:
        for _ in range(contexts):
            llm.open(QUESTION).call(LLMRequest(LLMAction.ABSORB, transcript, GREEDY))


def measure(model_dir: Path, budget_mb: float, context_tokens: int, fill_factor: float) -> dict[str, float]:
    manifest = Manifest.load(model_dir)
    per_token = manifest.kv.bytes_per_token()
    contexts = int(fill_factor * budget_mb * _MIB / (context_tokens * per_token)) + 1
    transcript = "1 2 3 4 5 6 7 8 9 " * (context_tokens // 18 + 1)  # about one token per character
    token = new_token()
    settings = RepositorySettings(link_model=True, cache_budget_bytes=int(budget_mb * _MIB))
    with tempfile.TemporaryDirectory(prefix="glimp_mem_") as work, \
            local_server(model_dir, work, token=token, settings=settings) as server:
        fill(server.grpc_url, token, 1, transcript)
        baseline = stub_memory_kib(server.pid or 0)
        fill(server.grpc_url, token, contexts, transcript)
        peak = stub_memory_kib(server.pid or 0)
    grown_mib = (peak["VmHWM"] - baseline["VmRSS"]) / 1024
    return {
        "budget_mib": budget_mb, "contexts_opened": contexts, "kv_bytes_per_token": per_token,
        "baseline_rss_mib": round(baseline["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(peak["VmHWM"] / 1024, 1),
        "growth_over_baseline_mib": round(grown_mib, 1), "growth_vs_budget": round(grown_mib / budget_mb, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--budget-mb", type=float, nargs="+", default=[8.0, 64.0])
    parser.add_argument("--context-tokens", type=int, default=400)
    parser.add_argument("--fill", type=float, default=3.0, help="open contexts worth this many budgets")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rows = [measure(args.model_dir, budget, args.context_tokens, args.fill) for budget in args.budget_mb]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
