"""Checks of the ports `glimp serve` listens on: free before the launch, ours after it.

A readiness check only proves that *a* server answers on the port. When another server already
holds it (a `glimp serve` still running), tritonserver fails to bind while the check happily
reaches the other one. So the port is test-bound before the launch, and after it the listening
socket is looked up in /proc to make sure it belongs to the process that was started.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path

from glimp_common.errors import BadInputError

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def port_in_use(host: str, port: int) -> bool:
    """Whether a TCP listener already holds `port` on `host`.

    SO_REUSEADDR, as servers set it: connections of a stopped server still in TIME_WAIT do not
    count, a live listener does. Raises BadInputError when `host` is no address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BadInputError(f"cannot listen on {host}:{port} ({exc.strerror}); give --host an address "
                                "of this machine (127.0.0.1, or 0.0.0.0 for every interface)") from exc
    return False


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """BadInputError naming the first flag (e.g. "--grpc-port") whose port is already in use."""
    for flag, port in ports.items():
        if port_in_use(host, port):
            raise BadInputError(
                f"port {port} on {host} ({flag}) is already in use by another process (a glimp serve still "
                f"running?); stop it or choose another {flag}"
            )


def listener_inodes(port: int, proc: Path = Path("/proc")) -> set[int]:
    """Socket inodes of every TCP listener on `port` (IPv4 and IPv6), from /proc/net."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = proc / "net" / table
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def owns_listener(pid: int, port: int, proc: Path = Path("/proc")) -> bool | None:
    """Whether process `pid` holds a listening socket on `port`; None where /proc cannot tell."""
    fd_dir = proc / str(pid) / "fd"
    if not (proc / "net" / "tcp").is_file() or not fd_dir.is_dir():
        return None
    wanted = {f"socket:[{inode}]" for inode in listener_inodes(port, proc)}
    try:
        names = os.listdir(fd_dir)
    except PermissionError:  # another user's process
        return None
    except FileNotFoundError:  # it exited meanwhile
        return False
    return bool(_links(fd_dir, names) & wanted)


def _links(fd_dir: Path, names: list[str]) -> set[str]:
    links = set()
    for name in names:
        try:
            links.add(os.readlink(fd_dir / name))
        except OSError:  # closed between the listing and now
            continue
    return links
