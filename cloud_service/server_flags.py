"""`TritonFlags`: tritonserver's command line for the glimp LLM, rendered from one typed object.

Both command lines come from here: the launcher's argv (`TritonServer`, the pip-installed binary)
and the printed production `docker run ... tritonserver ...` (NVIDIA's container). The flags that
make the service safe (explicit model control, gRPC only, both restricted protocols, keep-alive,
TLS) are fields every rendering shares, so the two cannot drift; the launcher adds the flags of a
private local process (its backend directory, listen addresses, shm prefix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud_service.security import ADMIN_HEADER
from protos.contract import AUTH_HEADER, MODEL_NAME

# Every gRPC protocol that changes or reveals server state: guarded by a per-launch admin token
# the edge never gets (with explicit model control an open repository API could unload the model).
ADMIN_PROTOCOLS = "model-repository,model-config,statistics,trace,logging,shared-memory"
# Edges ping idle connections (CloudLinkConfig.keepalive_time_s, 30 s). Triton's defaults (pings
# only during calls, at most one per 5 min) answer the third such ping with GOAWAY "too_many_pings"
# and drop the connection; accept pings down to every 5 s instead.
KEEPALIVE_FLAGS = (
    "--grpc-keepalive-permit-without-calls=1",
    "--grpc-http2-max-pings-without-data=0",
    "--grpc-http2-min-recv-ping-interval-without-data=5000",
)
# The same policy as gRPC server options, for the gateway (cloud_service/gateway.py) edges reach.
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
)


@dataclass(frozen=True)
class LocalServerFlags:
    """The flags only a launcher-owned local process gets (the container keeps its defaults).

    Such a process listens on a unix socket in a private (0700) directory, behind the gateway
    (cloud_service/gateway.py): other local users cannot connect, so it needs no token on its argv.
    """

    backend_directory: str  # our python backend folder (see launcher._prepare_backends)
    grpc_socket: str  # path of the unix socket gRPC listens on (tritonserver appends ":<port>")
    metrics_host: str  # metrics listen address (loopback unless asked)
    metrics_port: int
    exit_timeout_s: int  # tritonserver's own shutdown grace
    shm_prefix: str  # python backend shared-memory region prefix (removed at stop)

    @property
    def grpc_target(self) -> str:
        """What a gRPC client dials: tritonserver listens on `<address>:<port>`, port 0 here."""
        return f"unix:{self.grpc_socket}:0"


@dataclass(frozen=True)
class TritonFlags:
    """tritonserver's flags for serving `glimp_llm`; `args()` renders them in one order.

    Token values are put on the command line as given: only the production line has them, as
    shell expressions (`$GLIMP_EDGE_TOKEN`); a local process gets none (its socket is private).
    """

    model_repository: str
    admin_token: str | None = field(default=None, repr=False)  # guards ADMIN_PROTOCOLS
    inference_token: str | None = field(default=None, repr=False)  # None: inference is open
    tls_cert: str | None = None  # both set: gRPC over TLS
    tls_key: str | None = None
    local: LocalServerFlags | None = None  # set: a process the launcher runs itself

    def args(self) -> list[str]:
        """The flags, without the binary."""
        local = self.local
        args = [f"--model-repository={self.model_repository}"]
        if local is not None:
            args.append(f"--backend-directory={local.backend_directory}")
        args += ["--model-control-mode=explicit", f"--load-model={MODEL_NAME}"]
        if local is not None:
            args += ["--disable-auto-complete-config", "--strict-readiness=true"]
        args.append("--allow-http=false")
        if local is not None:
            args += [
                f"--grpc-address=unix:{local.grpc_socket}", "--grpc-port=0",
                f"--metrics-address={local.metrics_host}", f"--metrics-port={local.metrics_port}",
                f"--exit-timeout-secs={local.exit_timeout_s}",
                f"--backend-config=python,shm-region-prefix-name={local.shm_prefix}",
            ]
        args += list(KEEPALIVE_FLAGS)
        if self.inference_token is not None:
            args.append(f"--grpc-restricted-protocol=inference:{AUTH_HEADER}={self.inference_token}")
        if self.admin_token is not None:
            args.append(f"--grpc-restricted-protocol={ADMIN_PROTOCOLS}:{ADMIN_HEADER}={self.admin_token}")
        if self.tls_cert is not None or self.tls_key is not None:
            args += ["--grpc-use-ssl=true", f"--grpc-server-cert={self.tls_cert}",
                     f"--grpc-server-key={self.tls_key}"]
        return args
