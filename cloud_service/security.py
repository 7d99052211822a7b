"""The shared edge token and the TLS files: where they come from and what they may look like.

The token is never baked into code: it comes from a file or an environment variable. It is
checked by Triton itself (restricted-protocol header `x-edge-token` on the inference protocol),
so a request without it never reaches the model.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from glimp_common.errors import BadInputError
from protos.contract import GRPC_AUTH_METADATA_KEY

TOKEN_ENV = "GLIMP_EDGE_TOKEN"
TOKEN_FILE_ENV = "GLIMP_EDGE_TOKEN_FILE"
GRPC_METADATA_KEY = GRPC_AUTH_METADATA_KEY  # what a client sends
ADMIN_HEADER = "x-admin-token"  # guards model load/unload, config, statistics, tracing, logging
# Characters that survive Triton's `<protocols>:<key>=<value>` flag parsing and gRPC metadata.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]{16,256}")


def check_token(token: str, *, source: str = "the edge token") -> str:
    """Return `token` stripped, or raise BadInputError saying what a usable token looks like."""
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise BadInputError(
            f"{source} must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / - "
            f"(got {len(token)} characters); make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def read_token(token_file: Path | str | None = None) -> str | None:
    """The edge token: from `token_file`, else $GLIMP_EDGE_TOKEN_FILE, else $GLIMP_EDGE_TOKEN; or None."""
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    if path:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"token file {path} does not exist")
        return check_token(path.read_text(encoding="utf-8"), source=f"the token in {path}")
    value = os.environ.get(TOKEN_ENV)
    return check_token(value, source=f"${TOKEN_ENV}") if value else None


def new_token() -> str:
    """A fresh random token (for tests and for the per-launch admin token)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for TLS on the gRPC port."""

    cert: Path  # server certificate (chain)
    key: Path  # its private key

    def __post_init__(self) -> None:
        for what, path in (("certificate", self.cert), ("key", self.key)):
            if not Path(path).is_file():
                raise BadInputError(f"TLS {what} file {path} does not exist")
