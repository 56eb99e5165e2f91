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
    it: the decay follows whichever of the step count and the clock is further along. The clock's
    share of the decay starts where the warm-up's share of the steps ends (warmup_steps /
    total_steps of the budget), so a run on pace to finish its steps within the budget decays by
    its steps alone, from the first step after warm-up: its learning rates, and so its result, do
    not depend on the clock.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - warmup_steps)
    if time_progress > 0.0:
        warm = min(warmup_steps, total_steps) / max(1, total_steps)  # the warm-up's share of the budget
        time_progress = (time_progress - warm) / (1.0 - warm) if warm < 1.0 else 1.0
    progress = min(1.0, max(0.0, (step - warmup_steps) / span, time_progress))
    floor = lr * min_lr_ratio
    if schedule == "cosine":
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return lr - (lr - floor) * progress
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine, linear or constant")
