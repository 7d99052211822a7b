"""Run a command and measure it: wall time and the peak memory of its whole process tree.

    python -m bench.realsize.measured -- COMMAND...      # prints one JSON line after COMMAND's output

Peak memory two ways, both reported:
- `maxrss_bytes`: the kernel's high-water RSS of the largest single process in the tree
  (getrusage(RUSAGE_CHILDREN) of this wrapper, whose only descendants are COMMAND's);
- `tree_peak_bytes`: the largest sum of RSS over the tree, sampled every 0.2 s from /proc
  (catches children that run at once; may miss a peak shorter than the period).
Run as its own process so that RUSAGE_CHILDREN holds nothing but COMMAND.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _tree_rss_bytes(root: int) -> int:
    total, stack, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        stack += _children(pid)
    return total


def _sample(pid: int, peak: list[int], done: threading.Event) -> None:
    while not done.wait(0.2):
        peak[0] = max(peak[0], _tree_rss_bytes(pid))


def main(argv: list[str]) -> int:
    command = argv[1:] if argv and argv[0] == "--" else argv
    if not command:
        print("usage: python -m bench.realsize.measured -- COMMAND...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak, done = [0], threading.Event()
    sampler = threading.Thread(target=_sample, args=(process.pid, peak, done), daemon=True)
    sampler.start()
    code = process.wait()
    done.set()
    wall_s = time.perf_counter() - started
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    record = {"returncode": code, "wall_s": wall_s, "maxrss_bytes": maxrss, "tree_peak_bytes": peak[0]}
    print("MEASURED " + json.dumps(record), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
