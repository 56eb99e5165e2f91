"""Timing that is honest on both CPU and GPU: warm-up, many repeats, the median."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from genrec.devices import synchronize


def median_seconds(
    fn: Callable[[], object], device: torch.device | str, *, min_run_time: float = 0.5
) -> float:
    """Median wall time of one call of ``fn``.

    CPU: ``torch.utils.benchmark`` (adaptive repeats). CUDA: ``triton.testing.do_bench``,
    which times with CUDA events and flushes L2 between calls.
    """
    device = torch.device(device)
    if device.type == "cuda":
        import triton.testing

        return (
            float(
                triton.testing.do_bench(
                    fn, warmup=25, rep=max(100, int(min_run_time * 1000)), return_mode="median"
                )
            )
            / 1e3
        )
    from torch.utils.benchmark import Timer

    fn()  # warm-up: first-call allocations and lazy initialisation stay out of the figure
    measurement = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return float(measurement.blocked_autorange(min_run_time=min_run_time).median)


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


class PartTimer:
    """Time spent in each named part of a run: CUDA events on a GPU, the host clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.events: list[tuple[str, object, object]] = []
        self.host: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.host[name] = self.host.get(name, 0.0) + time.perf_counter() - t0

    def seconds(self) -> dict[str, float]:
        if not self.cuda:
            return dict(self.host)
        torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}
        for name, start, end in self.events:
            out[name] = out.get(name, 0.0) + start.elapsed_time(end) / 1e3
        return out
