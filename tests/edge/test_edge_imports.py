"""`import edge_client` and `glimp run`'s module work on an edge-only install."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "optimum", "tritonclient", "grpc", "cloud_service", "export", "bench")


def test_the_edge_api_imports_nothing_from_other_roles() -> None:
    code = (
        "import sys, edge_client, edge_client.run_command, edge_client.calibrate_command; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""
