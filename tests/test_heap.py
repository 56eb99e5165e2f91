"""genrec.heap: the glibc setting that keeps freed blocks for reuse, and when it stays off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = "import genrec.heap as h; print(h.keep_freed_memory(), h.keep_freed_memory())"


def _run(env_extra: dict, script: str = CHECK) -> str:
    """``script``'s output in a fresh interpreter, without the caller's malloc settings."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GENREC_KEEP"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applies_once_on_glibc_and_respects_the_users_settings():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run({}).split() == ["True", "True"]  # idempotent
    assert _run({"GENREC_KEEP_FREED_MEMORY": "0"}).split() == ["False", "False"]
    assert _run({"MALLOC_MMAP_THRESHOLD_": "65536"}).split() == ["False", "False"]


def test_tensors_still_allocate_and_free_after_it():
    import torch

    from genrec.heap import keep_freed_memory

    keep_freed_memory()
    for _ in range(3):  # the same large size freed and asked for again
        x = torch.ones(64, 1 << 20)
        assert float(x.sum()) == 64 * (1 << 20)
        del x


RELEASE = """
import genrec.heap as h
import torch
on = h.keep_freed_memory()
first = h.release_excess(1 << 20)  # the first call after a trim (or ever) only sets the level
blocks = [torch.ones(1 << 20) for _ in range(64)]  # 64 blocks of 4 MB, under the mmap threshold
del blocks  # kept by the heap: the resident set stays up
before = h._resident_bytes()
grown = h.release_excess(1 << 20)
after = h._resident_bytes()
print(on, first, grown, after < before - (128 << 20), h.release_excess(1 << 20), h.release_excess(1 << 40))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim, /proc/self/statm")
def test_release_excess_trims_only_past_the_bound_and_only_when_memory_is_kept():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")

    # Kept: the first call sets the level; 256 MB kept past it goes back over a 1 MB bound; the next
    # call sets the level again; nothing goes back under a 1 TB bound.
    assert _run({}, RELEASE).split() == ["True", "False", "True", "True", "False", "False"]
    # Not kept (the user's choice): release_excess never acts.
    assert _run({"GENREC_KEEP_FREED_MEMORY": "0"}, RELEASE).split()[:3] == ["False", "False", "False"]


HUGE = (
    "import os, re, json; {imports}; import torch\n"
    "t = torch.empty(8 << 20).fill_(1)  # 32 MB, touched\n"
    "huge = sum(int(k) for k in re.findall(r'AnonHugePages:\\s+(\\d+)', open('/proc/self/smaps').read()))\n"
    "print(json.dumps({{'env': os.environ.get('THP_MEM_ALLOC_ENABLE'), 'huge_mb': huge / 1024}}))"
)


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "none"
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else "none"


def _huge(imports: str, **env: str) -> dict:
    import json
    import os

    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run(
        [sys.executable, "-c", HUGE.format(imports=imports)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_genrec_first_asks_torch_for_huge_pages_on_large_blocks():
    got = _huge("import genrec")
    assert got["env"] == "1"
    if _thp_mode() == "madvise":  # torch's madvise is what gives the block huge pages
        assert got["huge_mb"] >= 16
        assert _huge("import torch; import genrec")["huge_mb"] < 16  # too late: torch kept 4 KB pages


def test_huge_pages_follow_the_users_setting_and_need_genrec_before_torch():
    assert _huge("import genrec", THP_MEM_ALLOC_ENABLE="0")["env"] == "0"
    assert _huge("import torch; import genrec")["env"] is None


def test_the_allocator_is_read_from_the_memory_map():
    from genrec import heap

    glibc = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    assert heap.allocator_from_maps(glibc) == "glibc"
    tcmalloc = glibc + "7f20-7f30 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n"
    assert heap.allocator_from_maps(tcmalloc) == "tcmalloc"
    assert heap.allocator_from_maps(glibc + "7f40-7f50 r-xp 0 08:01 3 /opt/lib/libjemalloc.so.2\n") == "jemalloc"
    # A library whose name merely contains an allocator's is not one.
    assert heap.allocator_from_maps(glibc + "7f60-7f70 r-xp 0 08:01 4 /opt/lib/mylibtcmalloc_shim.so\n") == "glibc"
    described = heap.describe()
    assert described["allocator"] in ("glibc", "system", *heap.PRELOADED_ALLOCATORS)
    assert set(described) == {"allocator", "LD_PRELOAD", "keep_freed_memory", heap.HUGE_PAGES_ENV}
