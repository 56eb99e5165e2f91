"""A rich progress bar that can be switched off: the encoders, the tokenizer, evaluation and batch
inference share it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(
    label: str, total: int, enabled: bool = True, unit: str = "", transient: bool = False
) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, status="")``; with ``enabled=False`` nothing is drawn. ``unit`` follows
    the count (e.g. "users"); a ``transient`` bar disappears when done."""
    if not enabled:
        yield lambda n=1, status="": None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *((TextColumn(unit),) if unit else ()),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=transient) as bar:
        task = bar.add_task(label, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            bar.update(task, advance=n, status=status)

        yield advance
