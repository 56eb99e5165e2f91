"""genrec.heap: the glibc setting that keeps freed blocks for reuse, and when it stays off."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "import genrec.heap as h; print(h.keep_freed_memory(), h.keep_freed_memory())"


def _run(env_extra: dict) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GENREC_KEEP"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True
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
