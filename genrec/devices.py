"""The machine a figure was measured on: device names, synchronising before a clock is read, and
peak memory. One place, so every results file names its device the same way; standard library
and torch only (the GPU machine has neither polars nor faiss)."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """A GPU's name, or the CPU's model with the threads torch uses (what a CPU figure depends on)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so a host clock read after it times that work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak on CUDA; a CPU process's peak resident set cannot be reset."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> dict:
    """{"bytes": ..., "kind": what was measured}: CUDA's peak allocation since the last reset, or the
    process's peak resident set size (interpreter and data included; it never goes down)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return {"bytes": int(rss * scale), "kind": "process peak RSS"}
