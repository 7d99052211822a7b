"""The balancer itself: its rendered config, real nginx accepting it, refusing the admin API, TLS
and the edge token end to end, and no orphan when its parent dies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from scale_helpers import needs_nginx, tiny_fleet
from tritonclient.grpc import service_pb2, service_pb2_grpc

from cloud_service.balancer.fleet import LocalFleet
from cloud_service.balancer.nginx import NginxBalancer
from cloud_service.balancer.nginx_config import (
    AFFINITY,
    ROUND_ROBIN,
    BalancerConfig,
    Layout,
    Replica,
    d,
    quote,
    render,
    render_directives,
)
from cloud_service.errors import ServerStartError
from cloud_service.launcher import pick_free_port
from cloud_service.security import ADMIN_HEADER, TLSFiles, new_token
from edge_client.errors import CloudUnavailableError, NotAuthorizedError
from edge_client.link import CloudLinkConfig, TritonLLM
from glimp_common.errors import BadInputError

REPLICAS = (Replica("127.0.0.1", 9001), Replica("127.0.0.1", 9002))


def _config(**overrides: object) -> BalancerConfig:
    return BalancerConfig(REPLICAS, 9000, **overrides)  # type: ignore[arg-type]


def test_arguments_are_quoted_and_control_characters_refused() -> None:
    assert quote("127.0.0.1:9001") == "127.0.0.1:9001"
    assert quote('say "hi"; {x}') == '"say \\"hi\\"; {x}"'
    assert quote("a\\b c") == '"a\\\\b c"'
    with pytest.raises(BadInputError, match="control character"):
        quote("evil;\n    location / { }")
    assert render_directives([d("a", "x y", children=[d("b", 1)])]) == 'a "x y" {\n    b 1;\n}'


def test_affinity_hashes_the_context_header_consistently_and_round_robin_does_not(tmp_path: Path) -> None:
    affinity, rr = (render(_config(policy=p), Layout(tmp_path)) for p in (AFFINITY, ROUND_ROBIN))
    assert "hash $http_x_glimp_context consistent;" in affinity
    assert "hash " not in rr
    assert "server 127.0.0.1:9002 max_fails=1 fail_timeout=2s;" in affinity


def test_only_inference_and_health_rpcs_are_proxied(tmp_path: Path) -> None:
    text = render(_config(), Layout(tmp_path))
    proxied = sorted(line.split()[2] for line in text.splitlines() if line.strip().startswith("location ="))
    assert proxied == [f"/inference.GRPCInferenceService/{rpc}"
                       for rpc in ("ModelInfer", "ModelReady", "ServerLive", "ServerReady")]
    assert text.count("grpc_pass") == 4  # `location /` answers by itself


@pytest.mark.parametrize("bad, match", [
    ({"policy": "random"}, "policy"), ({"max_fails": 0}, "max_fails"),
    ({"replicas": (REPLICAS[0], REPLICAS[0])}, "twice"), ({"replicas": ()}, "at least one"),
])
def test_bad_balancer_configs_are_refused_with_the_reason(bad: dict[str, object], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        BalancerConfig(**{"replicas": REPLICAS, "listen_port": 9000, **bad})  # type: ignore[arg-type]


@needs_nginx
def test_nginx_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL (no cleanup runs) still takes nginx with it."""
    port = pick_free_port()
    script = (
        "import sys, time\n"
        "from cloud_service.balancer.nginx import NginxBalancer\n"
        "from cloud_service.balancer.nginx_config import BalancerConfig, Replica\n"
        f"b = NginxBalancer(BalancerConfig((Replica('127.0.0.1', 9),), {port}))\n"
        "b.start(); print(b.pid, b.layout.prefix, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid_text, prefix = parent.stdout.readline().split()
    nginx_pid = int(pid_text)
    assert _alive(nginx_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10.0
    while _alive(nginx_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(prefix, ignore_errors=True)  # the parent had no chance to
    assert not _alive(nginx_pid), f"nginx {nginx_pid} outlived its parent"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def cert(self_signed_cert: TLSFiles) -> TLSFiles:
    return self_signed_cert


@pytest.fixture(scope="module")
def tls_fleet(tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory,
              cert: TLSFiles) -> Iterator[tuple[LocalFleet, str]]:
    token = new_token()
    with tiny_fleet(tiny_qwen3_dir, tmp_path_factory.mktemp("tls_fleet"), token, replicas=2,
                    tls=cert) as fleet:
        yield fleet, token


@needs_nginx
@pytest.mark.slow
@pytest.mark.triton
def test_tls_and_the_edge_token_hold_end_to_end(tls_fleet: tuple[LocalFleet, str], cert: TLSFiles) -> None:
    fleet, token = tls_fleet
    with TritonLLM(CloudLinkConfig(fleet.endpoint, token, timeout_s=10.0, tls_root_cert=cert.cert)) as llm:
        assert llm.ping() > 0  # TLS to nginx, re-encrypted to a replica, token checked there
    with TritonLLM(CloudLinkConfig(fleet.endpoint, new_token(), timeout_s=10.0,
                                   tls_root_cert=cert.cert)) as llm, pytest.raises(NotAuthorizedError):
        llm.ping()
    with TritonLLM(CloudLinkConfig(fleet.endpoint, token, timeout_s=5.0)) as llm, \
            pytest.raises(CloudUnavailableError):
        llm.ping()  # plaintext to a TLS listener


@needs_nginx
@pytest.mark.slow
@pytest.mark.triton
def test_the_admin_api_is_unreachable_through_the_balancer(tls_fleet: tuple[LocalFleet, str],
                                                          cert: TLSFiles) -> None:
    fleet, token = tls_fleet
    replica = fleet.replicas[0]
    # Neither a replica (its gateway forwards only inference and health) nor the balancer answers
    # the repository API, even with the edge token.
    auth = ((f"triton-grpc-protocol-{ADMIN_HEADER}", token),)
    credentials = grpc.ssl_channel_credentials(cert.cert.read_bytes())
    index = service_pb2.RepositoryIndexRequest()
    with grpc.secure_channel(replica.grpc_url, credentials) as direct, pytest.raises(grpc.RpcError) as own:
        service_pb2_grpc.GRPCInferenceServiceStub(direct).RepositoryIndex(index, metadata=auth, timeout=10.0)
    assert own.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.secure_channel(fleet.endpoint, credentials) as balanced, pytest.raises(grpc.RpcError) as err:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(balanced)
        stub.RepositoryIndex(index, metadata=auth, timeout=10.0)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "glimp balancer" in (err.value.details() or "")


@needs_nginx
def test_a_config_nginx_refuses_is_reported_with_its_message(tmp_path: Path) -> None:
    missing = TLSFiles.__new__(TLSFiles)  # bypass the existence check: nginx must say it itself
    object.__setattr__(missing, "cert", tmp_path / "nope.crt")
    object.__setattr__(missing, "key", tmp_path / "nope.key")
    balancer = NginxBalancer(BalancerConfig(REPLICAS, pick_free_port(), tls=missing))
    with pytest.raises(ServerStartError, match="nope.crt"):
        balancer.start()
    assert not balancer.is_running()
