"""How a stage uses the machine: CPU thread count and reduced-precision inference, set for a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PRECISIONS = ("float32", "bfloat16")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads for torch (0 leaves torch's setting alone).

    On a machine shared with other jobs, extra threads mostly wait for each other: a small model
    often runs faster, and always more repeatably, on one.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: str, precision: str):
    """A bfloat16 autocast context for ``device`` when ``precision`` is "bfloat16", else a no-op one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
