"""How long genrec's idle OpenMP workers spin before they sleep: about a hundred microseconds.

torch's CPU operators run their parallel parts on OpenMP (libgomp) worker threads. Left to its
default, libgomp keeps a worker that has finished its share spinning for 300,000 iterations
(milliseconds) before it sleeps, holding its core all that time. With a busy neighbour on a
2-core machine, the spinning threads and the neighbour then take turns at the scheduler's
time-slice granularity and each region waits for the thread that is off its core: two threads
trained the demo's model 2.5 times slower than one (issue 20; bench/results/cpu-threads/NOTES.md).
Sleeping at once (OMP_WAIT_POLICY=PASSIVE) fixes that but costs a wake-up per region on idle
cores. genrec first chose a spin of 1,000 iterations; a training step at a million items then
ran 1.2 times slower than with 10,000 on idle cores (1,266 against 1,541 examples/s; the
pipeline's train stage 1,110 against 1,372 with genrec.heap keeping freed memory): most of its
regions are further apart than 1,000 spins. 10,000 iterations (about a hundred microseconds)
catch them and still give the core up long before a time slice. Under a busy neighbour,
genrec.cpu_threads lowers the thread count to one, where the spin plays no part. A thread count
the user fixed at two keeps the cost of the longer spin under load: 559 against 713 examples/s
at 1,000 (bench/results/scale-cpu/NOTES.md, bench/results/cpu-threads/).

libgomp reads the setting once, when torch loads it, so it has to be in the environment before
``import torch``. ``genrec`` imports this module first thing (the ``genrec`` command line
imports the package before torch); a program that imported torch before genrec keeps whatever
it started with. A setting the user chose (``OMP_WAIT_POLICY``, or libgomp's ``GOMP_SPINCOUNT``)
is never overridden: ``GOMP_SPINCOUNT=300000`` gives back libgomp's default. Thread counts are
separate (genrec.cpu_threads, ``run.threads`` / ``--threads``).
"""

from __future__ import annotations

import os
import sys

_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

applied = False  # whether this process's OpenMP policy was set by genrec


SPIN_COUNT = "10000"


def prefer_short_spin() -> bool:
    """Set ``GOMP_SPINCOUNT=10000`` unless torch is loaded already or the user chose a wait setting.

    Returns whether it was set (also kept in ``applied``).
    """
    global applied
    if "torch" in sys.modules or any(name in os.environ for name in _USER_SETTINGS):
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    applied = True
    return True


def describe() -> dict:
    """The OpenMP settings this process runs with, for benchmark records."""
    return {
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "GENREC_CPU_PARALLEL": os.environ.get("GENREC_CPU_PARALLEL"),  # csrc/cpu/parallel.h
        "set_by_genrec": applied,
    }
