"""An edge-only install (`pip install .[edge]`, what a Jetson or laptop gets) works without the
cloud or export stacks: a fresh virtual environment, the real installer, the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What an edge device must not carry: the export stack, the Triton server, torch.
NOT_ON_THE_EDGE = ("torch", "transformers", "optimum", "pytriton", "onnx")


@pytest.mark.slow
def test_edge_extra_installs_and_runs_without_torch_or_the_cloud(tmp_path: Path) -> None:
    # A copy of the sources: pip builds in the tree it installs from, which must not be this one.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", ".cache", "build", "*.egg-info", "__pycache__", "models", "results", "tests"))
    env = tmp_path / "edge-venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}[edge]"], check=True,
                   timeout=900)
    probe = (
        "import importlib.util, sys\n"
        "import edge_client, edge_client.link, edge_client.loop\n"
        f"missing = [m for m in {NOT_ON_THE_EDGE!r} if importlib.util.find_spec(m) is None]\n"
        "print(','.join(missing))\n"
    )
    missing = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True,
                             timeout=120).stdout.strip().split(",")
    installed = set(NOT_ON_THE_EDGE) - set(missing)
    assert not installed, f"an edge-only install carries {sorted(installed)}"
    done = subprocess.run([str(env / "bin" / "glimp"), "run", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--llm-url" in done.stdout, done.stderr
    assert sys.prefix != str(env)  # the check ran in the fresh environment, not this one
