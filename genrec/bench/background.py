"""CPU-bound background processes for a benchmark: ``--background-load N``.

A machine that serves or trains is rarely idle, and parallel CPU code that is fast on idle cores
can collapse when one of them is taken (issue 20: OpenMP workers spinning against a neighbour).
``background_load(n)`` starts ``n`` busy-loop processes for the duration of a block and ends
them when the block exits, normally or by an exception (KeyboardInterrupt included). Each one
is bounded on its own as well: it stops at its deadline, and as soon as the process that started
it is gone, so none can outlive the benchmark even when that is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

DEFAULT_MAX_SECONDS = 3 * 3600.0

# Spins in pure Python (one core each), checking every ~10 ms whether its deadline has passed or
# its parent has gone (an orphan is re-parented, so getppid() changes).
_SPINNER = """
import os, sys, time
parent, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline and os.getppid() == parent:
    x = 0
    for i in range(100_000):
        x += i
"""


@contextlib.contextmanager
def background_load(n: int, max_seconds: float = DEFAULT_MAX_SECONDS) -> Iterator[dict]:
    """Run the block with ``n`` CPU-bound processes beside it; yields what to record in results.

    The yielded dict holds the process count and how they load the CPU; ``load_average`` (the
    1-minute figure when the block starts and ends) is filled in on exit.
    """
    if n < 0:
        raise ValueError(f"background load must be >= 0 processes, got {n}")
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    record = {
        "processes": n,
        "kind": "one pure-Python busy loop per process (one core each)" if n else "none",
        "max_seconds": max_seconds,
        "load_average": {"start": _load_1min()},
    }
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SPINNER, str(os.getpid()), str(max_seconds)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if procs:
            time.sleep(0.5)  # let them start spinning before anything is timed
        yield record
    finally:
        # A process that had already stopped (its deadline passed) left part of the run unloaded.
        record["stopped_before_the_end"] = sum(p.poll() is not None for p in procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        record["load_average"]["end"] = _load_1min()


def _load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
