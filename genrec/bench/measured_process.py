"""Running one command as a child process and measuring it: wall time, the peak resident memory of
its whole process tree (sampled from /proc), and its exit, with a timeout that kills the tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_POLL_S = 0.25


def _process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (from /proc's children lists; empty where /proc is absent)."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
    return found


def _peak_rss_bytes(pids: Sequence[int]) -> int:
    """The largest VmHWM (peak resident set) among ``pids``, in bytes."""
    peak = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return peak


def run_measured(cmd: Sequence[str], timeout_s: float, log_path: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (stdout and stderr to ``log_path``) in its own process group; return its status
    ("ok", "failed" or "timed out"), wall seconds, peak RSS and exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        peak, status, rusage, code = 0, None, None, None
        while True:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(wait_status)
                rusage = usage
                proc.returncode = code  # reaped here: keep Popen from waiting again
                break
            if time.perf_counter() - started > timeout_s:
                peak = max(peak, _peak_rss_bytes(_process_tree(proc.pid)))
                status = "timed out"
                _kill_group(proc.pid)
                _, wait_status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = code = os.waitstatus_to_exitcode(wait_status)
                break
            peak = max(peak, _peak_rss_bytes(_process_tree(proc.pid)))
            time.sleep(_POLL_S)
        seconds = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    peak = max(peak, int(rusage.ru_maxrss) * scale if rusage is not None else 0)
    if status is None:
        status = "ok" if code == 0 else "failed"
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "peak_rss_gb": round(peak / 2**30, 3),
        "returncode": code,
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
    }


def _kill_group(pid: int) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after a few seconds."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.perf_counter() + grace
        while time.perf_counter() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
            time.sleep(0.1)


def last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in lines[-n:])[-600:]


# ---------------------------------------------------------------- the stages' commands
