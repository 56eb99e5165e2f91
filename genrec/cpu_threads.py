"""genrec's default CPU thread count: the cores that other processes leave free.

torch runs an operator's parallel part as an OpenMP region split evenly over its threads, and
the region ends when the last thread is done. When another process holds one of the cores, the
thread that shares it with that process finishes late, every region waits for it, and two
threads train the demo's model ~2.5 times slower than one (issue 20; numbers in
bench/results/cpu-threads/NOTES.md). No spin or sleep setting of the OpenMP workers fixes both
cases: what does is fewer threads while the cores are taken.

So, when the user gave no thread setting, genrec's long loops (a training step, a batch of
recommendations) call :func:`tick`; at most every ``CHECK_INTERVAL_S`` it counts the tasks of
other processes that are running or waiting for a core (Linux: ``/proc/loadavg`` minus this
process's own running threads) and sets torch's thread count to the free cores, at least one
and at most torch's default. The count drops only when the last ``READINGS`` readings all saw
the cores taken (a short-lived command does not cost a slow step) and rises again at the first
reading that sees them free.

A setting from the user always wins: ``OMP_NUM_THREADS``, ``run.threads`` / ``--threads``
(:func:`use_fixed`, or any ``torch.set_num_threads`` this module did not make: it then leaves the
count alone), and ``GENREC_ADAPTIVE_THREADS=0`` turns the adaptation off.
"""

from __future__ import annotations

import os
import time
from collections import deque

import torch

CHECK_INTERVAL_S = 0.25
READINGS = 3


class _Governor:
    def __init__(self) -> None:
        self.enabled = False
        self.ceiling = 1
        self.last_set: int | None = None
        self.readings: deque[int] = deque(maxlen=READINGS)
        self.next_check = 0.0
        self.changes = 0


_governor = _Governor()


def enable() -> bool:
    """Adapt torch's thread count to the free cores from now on (genrec's command line does this).

    Returns False, and changes nothing, when the user fixed the thread count (``OMP_NUM_THREADS``)
    or turned the adaptation off (``GENREC_ADAPTIVE_THREADS=0``), or off Linux.
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("GENREC_ADAPTIVE_THREADS", "1") == "0":
        return False
    if others_running() is None:
        return False
    g = _governor
    g.enabled, g.ceiling, g.last_set = True, torch.get_num_threads(), torch.get_num_threads()
    g.readings.clear()
    g.next_check = 0.0
    return True


def disable() -> None:
    """Stop adapting; the thread count stays where it is."""
    _governor.enabled = False


def use_fixed(threads: int) -> None:
    """The user's thread count (``run.threads``, ``--threads``): set it and stop adapting."""
    disable()
    torch.set_num_threads(threads)


def adapting() -> bool:
    return _governor.enabled


def others_running() -> int | None:
    """Tasks of other processes running or waiting for a core right now; None where not measurable.

    ``/proc/loadavg``'s fourth field counts every runnable task of the machine; this process's own
    running threads (the caller, an OpenMP worker still spinning) are taken off.
    """
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        ours = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as f:
                    ours += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                continue
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - ours)


def free_cores(others: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - others)


def tick() -> None:
    """Call between steps of a long loop: cheap (a clock read) unless a check is due."""
    g = _governor
    if not g.enabled:
        return
    now = time.monotonic()
    if now < g.next_check:
        return
    g.next_check = now + CHECK_INTERVAL_S
    current = torch.get_num_threads()
    if current != g.last_set:  # someone else chose a count (a setting, a with-block): theirs stands
        return
    others = others_running()
    if others is None:
        return
    g.readings.append(free_cores(others))
    wanted = min(g.ceiling, max(g.readings))
    if wanted < current and len(g.readings) < READINGS:
        return  # too few readings yet to lower it
    if wanted != current:
        torch.set_num_threads(wanted)
        g.last_set = wanted
        g.changes += 1


def describe() -> dict:
    """For benchmark records: whether the count adapts, its ceiling, and how often it changed."""
    g = _governor
    return {"adaptive": g.enabled, "ceiling": g.ceiling, "changes": g.changes}
