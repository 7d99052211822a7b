"""No vLLM process may outlive the Triton stub that started it.

vLLM's AsyncLLM spawns EngineCore (and EngineCore its Worker) as fresh Python processes
(multiprocessing spawn: `sys.executable`, which inside the stub is the cloud venv's python3).
A clean unload stops them (AsyncLLM.shutdown), but when the stub dies (crash, SIGKILL, or
tritonserver killed and the stub exiting after it) nothing tells them, and they were seen running
on under PID 1 (about 2.4 GB). Linux's PR_SET_PDEATHSIG fixes that from inside each child: the
kernel sends it SIGKILL the moment its parent dies. It must be set by the child itself (it is
cleared across fork), so the cloud venv gets a one-line `.pth` hook (`install`, run by
setup_env.sh) that sets it at interpreter start-up in every process that inherits
GLIMP_DIE_WITH_PARENT=1, which model.py sets before it creates the engine. Processes started
elsewhere in the venv are untouched (the variable is not set there).

multiprocessing's resource_tracker is left alone: it ignores SIGTERM/SIGINT on purpose and exits by
itself once every process holding its pipe is gone, unlinking the shared memory they leaked; a
SIGKILL would skip exactly that clean-up.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

ENV_VAR = "GLIMP_DIE_WITH_PARENT"
PTH_NAME = "glimp_die_with_parent.pth"

# site.py executes .pth lines that start with "import"; keep it one line and cheap when unset.
PTH_LINE = (
    "import os, sys; exec(" + repr(
        "if os.environ.get('" + ENV_VAR + "') == '1' and sys.platform.startswith('linux') "
        "and 'resource_tracker' not in ' '.join(getattr(sys, 'orig_argv', sys.argv)):\n"
        "    import ctypes, signal\n"
        "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
        "    if os.getppid() == 1:  # the parent died before prctl: follow it now\n"
        "        os._exit(1)\n"
    ) + ")\n"
)


def install(site_packages: Path | None = None) -> Path:
    """Write the hook into this interpreter's site-packages (or `site_packages`); return its path."""
    target = Path(site_packages) if site_packages else Path(site.getsitepackages()[0])
    path = target / PTH_NAME
    path.write_text(PTH_LINE, encoding="utf-8")
    return path


if __name__ == "__main__":
    print(install(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
