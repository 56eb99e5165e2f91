"""Keep large freed blocks in the process heap, so a loop over batches reuses its memory instead
of asking the kernel for fresh pages every batch.

glibc serves every allocation above its mmap threshold (at most 32 MB by default) with a fresh
``mmap`` and returns it on ``free``; the next batch's block of the same size then faults in and
zeroes every page again. The test stage at 100k items allocates and frees many 30-270 MB blocks
per batch of 1,024 users (co-occurrence votes, beam logits, depth-decoder activations, the item
head's chunks of logits). On 5,000 test users + 8,000 validation users for the fusion that was
60 s of system time (page faults) against 109 s of user time. Raising the mmap threshold to
64 MB and not trimming the heap's top keeps the blocks up to that size for reuse: 27 s of system
time, and the stage 186 s -> 128 s on the same users (load 2.2-4.3 vs 1.9-2.4), same lists. The
cost is the memory those freed blocks keep: peak RSS 2.6 -> 3.2 GB there. A 1 GB threshold (every
block reused) saved no more time and kept 5.1 GB.

The training loop on a CPU turns it on too: a step frees and allocates the same activations. On
the 1M-item synthetic train stage that was about 4,900 page faults and 20 ms of system time a
step; with the blocks kept, 1,100 and 3 ms, and steps 4-5% faster
(bench/results/scale-cpu/NOTES.md).
"""

from __future__ import annotations

import ctypes
import os
import sys

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (and are reused) instead of their own mmap.
MMAP_THRESHOLD = 64 << 20
#: How far the resident set may grow past its level after a batch before release_excess trims.
MAX_KEPT = 512 << 20

_applied = False

#: torch's own switch (c10/core/alloc_cpu.cpp): CPU blocks of 2 MB and more are marked for
#: transparent huge pages (madvise), where the kernel allows them.
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> bool:
    """Ask torch to back its large CPU blocks with 2 MB pages (``THP_MEM_ALLOC_ENABLE=1``), unless
    torch is loaded already (it reads the variable once) or the user set it. Returns whether it set it.

    A training step allocates its activations anew every step, at addresses that drift as the heap
    fragments; with 4 KB pages the address translations miss more and more. At 1M items the step
    slowed from about 1,370 to 1,170 examples/s over 2,000 steps (every part of it alike, while a
    matrix product on fixed tensors kept its speed); with 2 MB pages it held 1,360-1,520 over 1,500
    steps (bench/results/scale-cpu/NOTES.md). ``genrec`` sets it at import, before torch loads.
    """
    if "torch" in sys.modules or HUGE_PAGES_ENV in os.environ:
        return False
    os.environ[HUGE_PAGES_ENV] = "1"
    return True


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks up to MMAP_THRESHOLD for reuse (for the rest of the
    process). Returns whether it is in effect: False off Linux/glibc, and when the user set glibc's
    own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (their choice wins) or
    ``GENREC_KEEP_FREED_MEMORY=0``."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("GENREC_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(os.environ.get(name) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc; musl and others have none
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success.
    _applied = mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return _applied


#: Allocators that replace glibc's malloc when preloaded (LD_PRELOAD), by their library's name.
PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def allocator_from_maps(maps: str) -> str:
    """The malloc a process's memory map (the text of /proc/<pid>/maps) shows: a preloaded
    tcmalloc, jemalloc or mimalloc by its library, else "glibc"."""
    for name in PRELOADED_ALLOCATORS:
        if f"/lib{name}" in maps:
            return name
    return "glibc"


def describe() -> dict:
    """This process's allocator settings, for benchmark records: which malloc (a preloaded one
    changes the training step's speed: bench/results/scale-cpu/NOTES.md), whether freed blocks are
    kept, and torch's huge-page switch."""
    try:
        with open("/proc/self/maps") as f:
            allocator = allocator_from_maps(f.read())
    except OSError:  # not Linux
        allocator = "system"
    return {
        "allocator": allocator,
        "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
        "keep_freed_memory": _applied,
        HUGE_PAGES_ENV: os.environ.get(HUGE_PAGES_ENV),
    }


_level: int | None = None


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_excess(max_kept: int = MAX_KEPT) -> bool:
    """Between batches, with :func:`keep_freed_memory` in effect: when the resident set has grown
    more than ``max_kept`` bytes past its level (the resident set after the first batch since the
    last trim), hand the heap's free memory back to the kernel (``malloc_trim``). Returns whether
    it did."""
    global _level
    if not _applied:
        return False
    resident = _resident_bytes()
    if _level is None:
        _level = resident
        return False
    if resident - _level <= max_kept:
        return False
    ctypes.CDLL(None).malloc_trim(ctypes.c_size_t(0))
    _level = None
    return True
