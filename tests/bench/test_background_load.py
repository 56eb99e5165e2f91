"""genrec.bench.background: the busy processes run during the block and never outlive it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from genrec.bench.background import background_load


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")


def test_processes_run_during_the_block_and_end_after_it():
    before = _children_of(os.getpid())
    with background_load(2) as record:
        spinners = _children_of(os.getpid()) - before
        assert len(spinners) == 2 and all(_alive(p) for p in spinners)
        assert record["processes"] == 2 and record["load_average"]["start"] is not None
    assert _wait_gone(spinners, 1.0)
    assert record["stopped_before_the_end"] == 0 and "end" in record["load_average"]


def test_processes_end_when_the_block_raises():
    before = _children_of(os.getpid())
    with pytest.raises(KeyboardInterrupt), background_load(1):
        spinners = _children_of(os.getpid()) - before
        raise KeyboardInterrupt
    assert len(spinners) == 1 and _wait_gone(spinners, 1.0)


def test_zero_starts_nothing_and_bad_counts_are_refused():
    before = _children_of(os.getpid())
    with background_load(0) as record:
        assert _children_of(os.getpid()) == before
    assert record["processes"] == 0
    with pytest.raises(ValueError, match=">= 0"), background_load(-1):
        pass


def test_processes_stop_at_their_deadline():
    before = _children_of(os.getpid())
    with background_load(1, max_seconds=0.6) as record:
        spinners = _children_of(os.getpid()) - before
        assert _wait_gone(spinners, 10.0)
    assert record["stopped_before_the_end"] == 1


def test_processes_stop_when_the_benchmark_is_killed():
    # A benchmark process that dies without any clean-up (os._exit): its spinners notice.
    script = textwrap.dedent(
        """
        import os, sys
        from genrec.bench.background import background_load
        with background_load(2):
            print("loaded", flush=True)
            sys.stdin.readline()
            os._exit(0)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "loaded"
        spinners = _children_of(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert len(spinners) == 2
    assert _wait_gone(spinners, 10.0)
