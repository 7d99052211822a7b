"""`glimp serve DIR --replicas N` (N > 1): N local replicas behind the nginx balancer, one endpoint.

The replicas get free loopback ports; the balancer listens on `--host`:`--grpc-port` and hashes
each call's `x-glimp-context` header onto a replica (`--balance round_robin` for a baseline). With
--tls-cert/--tls-key TLS ends at the balancer and is re-encrypted to every replica with the same
files; the edge token is forwarded and checked by each replica. Stops everything on Ctrl-C or
SIGTERM; nginx dies with this process even if it is killed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cloud_service.balancer.fleet import FleetConfig, LocalFleet
from cloud_service.repository import RepositorySettings
from cloud_service.security import TLSFiles
from protos.contract import CONTEXT_METADATA_KEY, GRPC_AUTH_METADATA_KEY, MODEL_NAME


def start_fleet(args: argparse.Namespace, settings: RepositorySettings, token: str | None,
                tls: TLSFiles | None, work_dir: Path) -> LocalFleet:
    """Start the fleet `args` ask for (the caller stops it); print its endpoints when ready."""
    config = FleetConfig(
        replicas=args.replicas, token=token, policy=args.balance, listen_host=args.host,
        listen_port=args.grpc_port, tls=tls, tls_server_name=args.tls_server_name, settings=settings,
    )
    fleet = LocalFleet(args.model_dir, work_dir, config, startup_timeout_s=args.startup_timeout_s)
    fleet.start()
    _print_ready(fleet, args, token is not None)
    return fleet


def fleet_work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="glimp_fleet_"))


def _print_ready(fleet: LocalFleet, args: argparse.Namespace, has_token: bool) -> None:
    assert fleet.balancer is not None
    auth = f"token required (metadata {GRPC_AUTH_METADATA_KEY})" if has_token else "NO TOKEN: open"
    tls = "TLS" if args.tls_cert else "plaintext"
    policy = f"hash on {CONTEXT_METADATA_KEY}, consistent" if args.balance == "affinity" else "round robin"
    print(f"glimp serve: {MODEL_NAME} ready on {len(fleet.replicas)} replicas (model {args.model_dir})")
    print(f"  gRPC     {fleet.endpoint}  ({tls}, {auth}; nginx, {policy})")
    for i, server in enumerate(fleet.replicas):
        print(f"  replica {i}  {server.grpc_url}  metrics {server.metrics_url}  log {server.log_path}")
    print(f"  balancer error log  {fleet.balancer.layout.error_log}")
    print("Ctrl-C or SIGTERM stops it.", flush=True)
