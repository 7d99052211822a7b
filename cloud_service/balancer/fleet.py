"""`LocalFleet`: N tritonserver replicas of one model plus the nginx balancer, on this machine.

What `glimp serve DIR --replicas N` runs, and what the scale tests and benchmark start. Each
replica is `cloud_service.launcher.local_server` (its own repository, ports, shm prefix and
process group); the balancer listens on one endpoint and hashes each call's context header onto
a replica. `restart(i)` brings a replica back on its old port, so the ring is the one it was.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cloud_service.balancer.nginx import NginxBalancer
from cloud_service.balancer.nginx_config import AFFINITY, BalancerConfig, Replica
from cloud_service.launcher import TritonServer, local_server, pick_free_port
from cloud_service.repository import RepositorySettings
from cloud_service.security import TLSFiles
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)
MAX_REPLICAS = 64


@dataclass(frozen=True)
class FleetConfig:
    """How many replicas, how calls are spread over them, and how to reach the balancer."""

    replicas: int
    token: str | None = field(repr=False)  # the edge token every replica checks (nginx forwards it)
    policy: str = AFFINITY
    listen_host: str = "127.0.0.1"
    listen_port: int | None = None  # None: a free port
    tls: TLSFiles | None = None  # set: TLS at the balancer and re-encrypted to every replica
    tls_server_name: str | None = None  # name in the certificate, when it does not cover 127.0.0.1
    settings: RepositorySettings = field(default_factory=lambda: RepositorySettings(link_model=True))
    fail_timeout_s: int = 2  # a failed replica is skipped this long before nginx tries it again

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise BadInputError(f"--replicas must be between 1 and {MAX_REPLICAS}, got {self.replicas}")


class LocalFleet:
    """Replicas + balancer; a context manager. `endpoint` is the one address edges use."""

    def __init__(self, model_dir: Path | str, work_dir: Path | str, config: FleetConfig,
                 **server: Any) -> None:
        self.model_dir = Path(model_dir)
        self.work_dir = Path(work_dir)
        self.config = config
        self._server_options = server  # further ServerConfig fields (timeouts, log files)
        self.replicas: list[TritonServer] = []
        self.balancer: NginxBalancer | None = None

    @property
    def endpoint(self) -> str:
        if self.balancer is None:
            raise BadInputError("the fleet is not started")
        return self.balancer.endpoint

    def __enter__(self) -> LocalFleet:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Start every replica (in parallel, each until a real inference succeeds), then the balancer."""
        try:
            self.replicas = [self._replica(i) for i in range(self.config.replicas)]
            with ThreadPoolExecutor(max_workers=len(self.replicas)) as pool:
                list(pool.map(lambda server: server.start(), self.replicas))
            self.balancer = NginxBalancer(self._balancer_config(self.config.listen_port or pick_free_port()))
            self.balancer.start()
        except BaseException:
            self.stop()
            raise

    def restart(self, index: int) -> float:
        """Start replica `index` again on its old gRPC port (after a crash); its seconds to ready."""
        old = self.replicas[index]
        old.stop()
        self.replicas[index] = self._replica(index, grpc_port=old.config.grpc_port)
        return self.replicas[index].start()

    def add_replica(self) -> float:
        """Start one more replica and reload the balancer onto the larger ring; its seconds to ready."""
        if self.balancer is None:
            raise BadInputError("the fleet is not started")
        server = self._replica(len(self.replicas))
        ready_s = server.start()
        self.replicas.append(server)
        self.balancer.reconfigure(self._balancer_config(self.balancer.config.listen_port))
        return ready_s

    def _balancer_config(self, listen_port: int) -> BalancerConfig:
        cfg = self.config
        return BalancerConfig(
            replicas=tuple(Replica("127.0.0.1", s.config.grpc_port) for s in self.replicas),
            listen_port=listen_port, listen_host=cfg.listen_host, policy=cfg.policy, tls=cfg.tls,
            upstream_server_name=cfg.tls_server_name or "localhost", fail_timeout_s=cfg.fail_timeout_s,
        )

    def stop(self) -> None:
        """Balancer first (no new calls), then every replica, even when one fails to stop. Idempotent."""
        if self.balancer is not None:
            self.balancer.cleanup()
        failures = []
        for server in self.replicas:
            try:
                server.stop()
            except Exception as exc:  # the others must still stop: no orphaned tritonserver
                log.exception("stopping replica %s failed", server.grpc_url)
                failures.append(exc)
        if failures:
            raise failures[0]

    def _replica(self, index: int, **overrides: Any) -> TritonServer:
        cfg = self.config
        options = {**self._server_options, **overrides}
        if cfg.tls is not None:
            options.update(tls=cfg.tls, tls_server_name=cfg.tls_server_name)
        return local_server(self.model_dir, self.work_dir / f"replica{index}", token=cfg.token,
                            settings=cfg.settings, **options)
