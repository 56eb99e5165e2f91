"""The training progress bar: optimiser steps, the running loss and the last validation NDCG@10."""

from __future__ import annotations

import math

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """A rich progress bar over optimiser steps (silent when disabled)."""

    def __init__(self, total: int, enabled: bool, console=None) -> None:
        self._bar = None
        if not enabled:
            return
        self._bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val NDCG@10 {task.fields[ndcg]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, loss="-", ndcg="-")
        self._bar.start()

    def advance_to(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def update(self, step: int, loss: float | None = None, ndcg: float | None = None) -> None:
        if self._bar is None:
            return
        fields = {}
        if loss is not None and math.isfinite(loss):
            fields["loss"] = f"{loss:.4f}"
        if ndcg is not None:
            fields["ndcg"] = f"{ndcg:.4f}"
        self._bar.update(self._task, completed=step, **fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
