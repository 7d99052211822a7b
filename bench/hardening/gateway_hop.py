"""`python -m bench.hardening.gateway_hop MODEL_DIR`: what the gateway's extra hop costs per call.

Median round trip of a cheap ModelInfer (CLOSE of an unknown context: no model work) through the
gateway (what edges use) and straight to the server's private socket, alternating twice.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from cloud_service.launcher import local_server
from edge_client.link import build_infer_request
from protos import edge_cloud_v1_pb2 as pb


def median_ms(target: str, payload: bytes, calls: int) -> float:
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(50):  # warm-up: connection, first allocations
            infer(payload, timeout=10)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            infer(payload, timeout=10)
            times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args(argv)
    close = pb.StepRequest(protocol_version=1, context_id=secrets.token_hex(16), client_key=os.urandom(32),
                           action=pb.CLOSE)
    payload = build_infer_request(close).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="glimp_hop_") as work, \
            local_server(args.model_dir, work, token=None) as server:
        assert server.upstream is not None
        for _ in range(2):
            print(f"gateway p50 {median_ms(server.grpc_url, payload, args.calls)} ms, "
                  f"direct p50 {median_ms(server.upstream, payload, args.calls)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
