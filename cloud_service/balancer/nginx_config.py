"""nginx's configuration for the replica balancer, rendered from typed objects (no string soup).

`BalancerConfig` says what the balancer does (listen address, replicas, affinity or round robin,
TLS, passive health); `render(config, layout)` turns it into nginx.conf text through a small
directive tree whose arguments are escaped in one place (`quote`). Only the inference and health
RPCs of KServe v2 are proxied: every other path (the model-repository API, statistics, ...) gets
gRPC UNIMPLEMENTED from nginx itself and never reaches a replica.

Affinity hashes the `x-glimp-context` header with `hash ... consistent` (ketama: 160 points per
server), so a context's steps land on the replica holding its KV, and removing or adding one
replica moves only that replica's share of contexts. Health RPCs (no context) go round robin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud_service.security import TLSFiles
from glimp_common.errors import BadInputError
from protos.contract import CONTEXT_METADATA_KEY

AFFINITY = "affinity"  # consistent hash on the context header
ROUND_ROBIN = "round_robin"  # nginx's default: a measurement baseline, contexts scatter
POLICIES = (AFFINITY, ROUND_ROBIN)
# The RPCs an edge needs; everything else under inference.GRPCInferenceService is refused.
INFERENCE_RPCS = ("ModelInfer",)
HEALTH_RPCS = ("ServerLive", "ServerReady", "ModelReady")
_SERVICE = "inference.GRPCInferenceService"
_GRPC_UNIMPLEMENTED = 12
# nginx turns request header names into variables: lower case, '-' -> '_'.
CONTEXT_VARIABLE = "$http_" + CONTEXT_METADATA_KEY.replace("-", "_")
_BARE = re.compile(r"^[A-Za-z0-9_./:=$@+*-]+$")


@dataclass(frozen=True)
class Replica:
    """One Triton replica's gRPC endpoint."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise BadInputError(f"replica port {self.port} is not a TCP port (1-65535)")
        if not self.host or not _BARE.match(self.host):
            raise BadInputError(f"replica host {self.host!r} is not a plain host name or address")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BalancerConfig:
    """What the balancer does; `render` writes it as nginx.conf."""

    replicas: tuple[Replica, ...]
    listen_port: int
    listen_host: str = "127.0.0.1"
    policy: str = AFFINITY
    tls: TLSFiles | None = None  # set: TLS terminated here, and re-encrypted to the replicas
    # The DNS name the replicas' certificate must carry: nginx 1.22 checks upstream certificates by
    # host name only (an IP address in subjectAltName does not match "127.0.0.1").
    upstream_server_name: str = "localhost"
    max_fails: int = 1  # failed attempts within fail_timeout_s that mark a replica down
    fail_timeout_s: int = 2  # ... and how long it stays down before nginx tries it again
    connect_timeout_s: float = 1.0  # a dead replica refuses at once; a hung one costs this
    read_timeout_s: float = 120.0  # longest a step may think (a decode can run long)
    next_upstream_tries: int = 3  # attempts per call over different replicas (never after a send)
    worker_connections: int = 1024
    reload_drain_s: int = 5  # after a reload, old workers' connections are cut after this long

    def __post_init__(self) -> None:
        if not self.replicas:
            raise BadInputError("the balancer needs at least one replica")
        if len({r.address for r in self.replicas}) != len(self.replicas):
            raise BadInputError(f"replicas listed twice: {[r.address for r in self.replicas]}")
        if self.policy not in POLICIES:
            raise BadInputError(f"balancer policy {self.policy!r} unknown; choose one of {POLICIES}")
        Replica(self.listen_host, self.listen_port)  # same checks as a replica's address
        if min(self.max_fails, self.fail_timeout_s, self.next_upstream_tries, self.reload_drain_s) < 1:
            raise BadInputError("max_fails, fail_timeout_s, next_upstream_tries and reload_drain_s must be "
                                "at least 1")
        if min(self.connect_timeout_s, self.read_timeout_s) <= 0:
            raise BadInputError("balancer timeouts must be positive")


@dataclass(frozen=True)
class Layout:
    """Where one nginx process keeps its files (all under one private folder)."""

    prefix: Path

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"  # one line per call: upstream, status, context

    def temp(self, name: str) -> Path:
        return self.prefix / "temp" / name


@dataclass(frozen=True)
class Directive:
    """`name args...;`, or `name args... { children }` when `children` is not None."""

    name: str
    args: tuple[str, ...] = ()
    children: tuple[Directive, ...] | None = None


def d(name: str, *args: object, children: Sequence[Directive] | None = None) -> Directive:
    """A directive; arguments are stringified here and escaped at rendering."""
    return Directive(name, tuple(str(a) for a in args), None if children is None else tuple(children))


def quote(arg: str) -> str:
    """One nginx argument: bare when safe, else double-quoted with `\\` and `"` escaped.

    `$` stays live on purpose (variables); control characters are refused: nginx has no escape
    for them and they would end the directive.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise BadInputError(f"nginx argument {arg!r} holds a control character")
    if arg and _BARE.match(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_directives(directives: Sequence[Directive], indent: int = 0) -> str:
    lines: list[str] = []
    pad = "    " * indent
    for directive in directives:
        head = " ".join([directive.name, *(quote(a) for a in directive.args)])
        if directive.children is None:
            lines.append(f"{pad}{head};")
        else:
            lines.append(f"{pad}{head} {{")
            lines.append(render_directives(directive.children, indent + 1))
            lines.append(f"{pad}}}")
    return "\n".join(line for line in lines if line)


def render(config: BalancerConfig, layout: Layout, *, run_as: str | None = None) -> str:
    """nginx.conf text for `config`, with every file under `layout.prefix`.

    `run_as`: the user worker processes run as (needed when nginx starts as root, which would
    otherwise switch them to `nobody`, unable to use the private temp folders).
    """
    # worker_shutdown_timeout: after a reload, an old worker still holding busy connections is cut
    # off after this long (the edge retries), so a new ring takes over within bounded time.
    main = [d("daemon", "off"), d("master_process", "on"), d("worker_processes", 1),
            d("worker_shutdown_timeout", f"{config.reload_drain_s}s"),
            d("pid", layout.pid), d("error_log", layout.error_log, "info")]
    if run_as is not None:
        main.append(d("user", run_as))
    main.append(d("events", children=[d("worker_connections", config.worker_connections)]))
    main.append(d("http", children=_http(config, layout)))
    return render_directives(main) + "\n"


def _http(config: BalancerConfig, layout: Layout) -> list[Directive]:
    temps = [d(f"{name}_temp_path", layout.temp(name)) for name in
             ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
    log_format = d("log_format", "glimp",
                   f"$msec $upstream_addr $status $request_uri {CONTEXT_VARIABLE} $request_time")
    return [
        *temps, log_format, d("access_log", layout.access_log, "glimp"),
        d("client_max_body_size", "64m"),  # the link's largest message (transport._MAX_MESSAGE_BYTES)
        # `zone`: failure counts shared by all workers, so a dead replica is marked down once.
        d("upstream", "glimp_contexts",
          children=[*_policy(config), d("zone", "glimp_contexts", "256k"), *_servers(config)]),
        d("upstream", "glimp_any",  # health RPCs carry no context
          children=[d("zone", "glimp_any", "256k"), *_servers(config)]),
        d("server", children=_server(config)),
    ]


def _policy(config: BalancerConfig) -> list[Directive]:
    if config.policy == AFFINITY:
        return [d("hash", CONTEXT_VARIABLE, "consistent")]
    return []  # round robin is nginx's default


def _servers(config: BalancerConfig) -> list[Directive]:
    return [d("server", r.address, f"max_fails={config.max_fails}", f"fail_timeout={config.fail_timeout_s}s")
            for r in config.replicas]


def _server(config: BalancerConfig) -> list[Directive]:
    listen = d("listen", f"{config.listen_host}:{config.listen_port}", *(["ssl"] if config.tls else []),
               "http2")
    body = [listen]
    if config.tls is not None:
        body += [d("ssl_certificate", config.tls.cert), d("ssl_certificate_key", config.tls.key),
                 d("ssl_protocols", "TLSv1.2", "TLSv1.3")]
    body += [d("location", "=", f"/{_SERVICE}/{rpc}", children=_proxy(config, "glimp_contexts"))
             for rpc in INFERENCE_RPCS]
    body += [d("location", "=", f"/{_SERVICE}/{rpc}", children=_proxy(config, "glimp_any"))
             for rpc in HEALTH_RPCS]
    body.append(d("location", "/", children=_refuse()))
    return body


def _proxy(config: BalancerConfig, upstream: str) -> list[Directive]:
    scheme = "grpcs" if config.tls else "grpc"
    # Another replica is tried only when the call never reached one (connection refused, reset
    # before the request was sent, connect timeout): gRPC calls are POSTs, and nginx does not
    # resend a non-idempotent request it already sent. A replica's own gRPC errors (a wrong token
    # is UNAVAILABLE) come back as they are.
    proxy = [
        d("grpc_pass", f"{scheme}://{upstream}"),
        d("grpc_next_upstream", "error", "timeout"),
        d("grpc_next_upstream_tries", config.next_upstream_tries),
        d("grpc_connect_timeout", f"{int(config.connect_timeout_s * 1000)}ms"),
        d("grpc_read_timeout", f"{int(config.read_timeout_s)}s"),
        d("grpc_send_timeout", f"{int(config.read_timeout_s)}s"),
    ]
    if config.tls is not None:
        # Re-encrypted to the replicas, verified against the same certificate (the project's TLS
        # files are one self-signed pair; in production: the replicas' CA).
        proxy += [d("grpc_ssl_verify", "on"), d("grpc_ssl_trusted_certificate", config.tls.cert),
                  d("grpc_ssl_server_name", "on"),
                  d("grpc_ssl_name", config.upstream_server_name)]
    return proxy


def _refuse() -> list[Directive]:
    # A trailers-only gRPC answer made by nginx: the call never reaches a replica.
    return [
        d("default_type", "application/grpc"),
        d("add_header", "grpc-status", _GRPC_UNIMPLEMENTED, "always"),
        d("add_header", "grpc-message", "not served through the glimp balancer", "always"),
        d("return", 204),
    ]
