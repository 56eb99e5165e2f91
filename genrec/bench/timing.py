"""Timing that is honest on both CPU and GPU: warm-up, many repeats, the median."""

from __future__ import annotations

from collections.abc import Callable

import torch


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
