"""What another local user sees of a running server (issue 12, finding 1): no secret, no way in.

Runs its probes as `nobody` through setpriv (needs root to switch user; skipped otherwise), with
the system's python3: the server's argv holds no token, its environment is unreadable, and its
gRPC socket (the one without a token check) refuses the connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cloud_service.launcher import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

_PROBE = """
import socket, sys
pid, sock, token = sys.argv[1], sys.argv[2], sys.argv[3]
cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode()
print("token-in-argv" if token in cmdline else "argv-clean")
try:
    open(f"/proc/{pid}/environ", "rb").read()
    print("environ-readable")
except OSError:
    print("environ-closed")
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sock)
    print("socket-open")
except OSError:
    print("socket-closed")
"""


_CAN_SWITCH = os.geteuid() == 0 and shutil.which("setpriv") is not None and Path("/usr/bin/python3").exists()


@pytest.mark.skipif(not _CAN_SWITCH, reason="switching user needs root, setpriv and a system python3")
def test_another_local_user_finds_no_secret_and_no_way_in(own_server: tuple[TritonServer, str]) -> None:
    server, token = own_server
    assert server.upstream is not None
    socket_path = server.upstream.removeprefix("unix:")  # tritonserver names it "<address>:<port>"
    assert Path(socket_path).is_socket()  # the probe below fails on permissions, not on a wrong path
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", _PROBE,
         str(server.pid), socket_path, token],
        capture_output=True, text=True, timeout=60, check=True, env={"PATH": "/usr/bin:/bin"},
    )
    assert probe.stdout.split() == ["argv-clean", "environ-closed", "socket-closed"]
    assert server.check_ready()  # and the owner's own path still works
