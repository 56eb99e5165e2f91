"""OpenMP's wait policy for genrec's processes: idle worker threads sleep instead of spinning.

torch's CPU operators and genrec's C++ kernels run their parallel regions on OpenMP (libgomp)
worker threads. Left to its default, libgomp keeps a worker that has finished its share spinning
for ~300,000 iterations (milliseconds) before it sleeps, so the worker never gives its core
back. That costs nothing on idle cores, but when another process holds a core, the spinning
threads and that process take turns at the scheduler's time-slice granularity and every region
waits for whichever thread is off its core: on a 2-core machine with one busy neighbour, beam
search ran 16 times slower on two threads than on one (issue 20; numbers in
bench/results/cpu-threads/NOTES.md). With the passive policy a worker that runs out of work
sleeps at once: its core goes idle and the scheduler moves the thread that is still waiting
there.

libgomp reads the policy once, when torch loads it, so it has to be in the environment before
``import torch``. ``genrec`` imports this module first thing (the ``genrec`` command line
imports the package before torch); a program that imported torch before genrec keeps whatever
policy it started with. A policy the user chose (``OMP_WAIT_POLICY``, or libgomp's
``GOMP_SPINCOUNT``) is never overridden: ``GOMP_SPINCOUNT=300000`` gives back libgomp's default.
Thread counts are separate: ``run.threads`` / ``--threads`` (``torch.set_num_threads``) still
decide them.
"""

from __future__ import annotations

import os
import sys

_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

applied = False  # whether this process's OpenMP policy was set by genrec


def prefer_sleeping_workers() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless torch is loaded already or the user chose a policy.

    Returns whether it was set (also kept in ``applied``).
    """
    global applied
    if "torch" in sys.modules or any(name in os.environ for name in _USER_SETTINGS):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    applied = True
    return True


def describe() -> dict:
    """The OpenMP settings this process runs with, for benchmark records."""
    return {
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "set_by_genrec": applied,
    }
