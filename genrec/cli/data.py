"""``genrec data``: prepare raw datasets, download public ones, and describe a prepared one."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

data_app = typer.Typer(help="Datasets: download, prepare, stats.", no_args_is_help=True)
console = Console(soft_wrap=True)


def fail(message: str) -> None:
    """Print a data error without a traceback and exit with status 1."""
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(1)


@data_app.command("prepare")
def prepare(
    fmt: str = typer.Option(..., "--format", help="p5, amazon2014, movielens or table."),
    source: Path = typer.Option(..., "--source", help="Folder (or, for table, file) with the raw data."),
    out: Path = typer.Option(..., "--out", help="Prepared dataset directory to write."),
    name: str = typer.Option(None, help="Dataset name for the manifest (default: the source folder's name)."),
    min_user_interactions: int = typer.Option(
        None, help="Iterative k-core: drop users with fewer interactions (default 5 for amazon2014, else 0)."
    ),
    min_item_interactions: int = typer.Option(
        None, help="Iterative k-core: drop items with fewer interactions (default 5 for amazon2014, else 0)."
    ),
    skip: list[str] = typer.Option(
        [],
        help="Drop bad rows of this kind instead of failing (repeatable): malformed, duplicates, "
        "short_users, unknown_items. Counts go to the manifest.",
    ),
    encoding: str = typer.Option(None, help="Text encoding of the raw files (default: the format's own)."),
    items: Path = typer.Option(None, "--items", help="Item text file (p5: JSON lines; table: Parquet/CSV)."),
    user_col: str = typer.Option("user_id", help="table: the user id column."),
    item_col: str = typer.Option("item_id", help="table: the item id column."),
    time_col: str = typer.Option("timestamp", help="table: the timestamp column (integer or date-time)."),
    min_rating: float = typer.Option(None, help="movielens/amazon2014: keep ratings at or above this only."),
    force: bool = typer.Option(False, "--force", help="Replace an existing prepared dataset at --out."),
) -> None:
    """Read raw data in FORMAT and write a prepared dataset (interactions, items, split, manifest)."""
    from genrec.data.errors import DataError
    from genrec.data.prepare import prepare_dataset

    fmt_options: dict = {}
    if encoding is not None:
        fmt_options["encoding"] = encoding
    if items is not None:
        fmt_options["items_file"] = items
    if fmt == "table":
        fmt_options.update(user_col=user_col, item_col=item_col, time_col=time_col)
    if min_rating is not None:
        fmt_options["min_rating"] = min_rating
    try:
        with console.status(f"preparing {source} ({fmt})"):
            path = prepare_dataset(
                fmt,
                source,
                out,
                min_user_interactions=min_user_interactions,
                min_item_interactions=min_item_interactions,
                skip=tuple(skip),
                name=name,
                overwrite=force,
                **fmt_options,
            )
    except (DataError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    manifest = json.loads((path / "manifest.json").read_text())
    console.print(
        f"wrote [bold]{path}[/]: {manifest['num_users']:,} users, {manifest['num_items']:,} items, "
        f"{manifest['num_interactions']:,} interactions"
    )
    for reason, count in manifest["skipped"].items():
        console.print(f"  skipped ({reason}): {count:,}")
    for note in manifest.get("notes", []):
        console.print(f"  [yellow]note:[/] {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
