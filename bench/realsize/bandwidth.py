"""Memory bandwidth, stream style, with numpy: what bounds a batch-1 decode on a CPU.

    python -m bench.realsize.bandwidth [--threads 2] [--mib 512]

A batch-1 decode reads every weight once per token, so its ceiling is bandwidth / bytes read per
token. Kernels (each over arrays far larger than the caches, best of several passes):
- read: `a.sum()` (reads a; the decode's pattern: weights are read, little is written);
- copy: b[:] = a (reads a, writes b: 2 x bytes, as STREAM counts it);
- triad: c = a + s * b done in place as two numpy passes (numpy does not fuse: 5 x bytes moved).
numpy runs one kernel on one core; `--threads` runs that many kernels at once on separate arrays
(numpy releases the GIL inside them), as a 2-thread decode loads the memory system.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _read(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    a.sum()


def _copy(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    np.copyto(b, a)


def _triad(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    np.multiply(b, 3.0, out=c)
    np.add(c, a, out=c)


KERNELS: dict[str, tuple[Kernel, int]] = {"read": (_read, 1), "copy": (_copy, 2), "triad": (_triad, 5)}


def measure(kernel: str, *, threads: int = 1, mib: int = 512, passes: int = 5) -> float:
    """GB/s of `kernel` with `threads` copies running at once on arrays of `mib` MiB each."""
    function, traffic = KERNELS[kernel]
    n = mib * 2**20 // 8
    arrays = [(np.ones(n), np.ones(n), np.ones(n)) for _ in range(threads)]
    best = float("inf")
    for _ in range(passes):
        barrier = threading.Barrier(threads + 1)
        workers = [threading.Thread(target=_run, args=(barrier, function, arr)) for arr in arrays]
        for w in workers:
            w.start()
        barrier.wait()
        started = time.perf_counter()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - started)
    return traffic * n * 8 * threads / best / 1e9


def _run(
    barrier: threading.Barrier, function: Kernel, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    barrier.wait()
    function(*arrays)


def measure_all(threads: int, mib: int) -> dict[str, float]:
    return {f"{k}_{t}t_gb_s": measure(k, threads=t, mib=mib) for k in KERNELS for t in sorted({1, threads})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realsize.bandwidth", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mib", type=int, default=512, help="MiB per array (3 arrays per thread)")
    args = parser.parse_args(argv)
    print(json.dumps(measure_all(args.threads, args.mib), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
