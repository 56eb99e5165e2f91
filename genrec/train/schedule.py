"""Learning-rate schedule: linear warm-up, then cosine or linear decay to ``lr * min_lr_ratio``.

A pure function of the step (and, for runs with a time budget, of the clock), so resuming needs
only the step number and the elapsed time (no scheduler object to save).
"""

from __future__ import annotations

import math


def learning_rate(
    step: int,
    *,
    lr: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    time_progress: float = 0.0,
) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``time_progress`` (elapsed / time budget) lets a run with a time budget decay fully within
    it: the decay follows whichever of the step count and the clock is further along.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span, time_progress))
    floor = lr * min_lr_ratio
    if schedule == "cosine":
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return lr - (lr - floor) * progress
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine, linear or constant")
