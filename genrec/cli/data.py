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


@data_app.command("download")
def download(
    name: str = typer.Argument(..., help="A known dataset (see `genrec data list`)."),
    root: Path = typer.Option(None, help="Data folder (default: $GENREC_DATA_DIR, else ~/.cache/genrec)."),
    retries: int = typer.Option(3, help="Resume an interrupted transfer this many times before giving up."),
) -> None:
    """Fetch a public dataset's raw files: resumable, checksum-verified, renamed into place when complete."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from genrec.data.download import download_dataset
    from genrec.data.errors import DownloadError
    from genrec.data.registry import get_dataset

    try:
        ds = get_dataset(name)
    except KeyError as e:
        fail(str(e.args[0]))
    tasks: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:

        def report(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        try:
            manifest = download_dataset(ds, root, retries=retries, progress=report)
        except DownloadError as e:
            fail(str(e))
    for f in manifest["files"]:
        check = (
            "[green]sha256 verified[/]"
            if f["verified"]
            else "[yellow]no published checksum; sha256 recorded[/]"
        )
        console.print(f"{f['path']}: {f['bytes']:,} bytes, {check}")
        for member in f.get("extracted", []):
            mark = " (verified)" if member["verified"] else ""
            console.print(f"  extracted {member['path']}{mark}")
    console.print(f"terms: {ds.terms}\ncite: {ds.citation}")
    if ds.notes:
        console.print(f"[yellow]note:[/] {ds.notes}")
    from genrec.data.paths import data_dir

    folder = (root if root is not None else data_dir()) / ds.folder
    console.print(f"next: genrec data prepare --format {ds.format} --source {folder} --out DIR")


@data_app.command("list")
def list_datasets() -> None:
    """The datasets genrec knows, their format, and whether they are in the data folder."""
    from rich.table import Table

    from genrec.data.paths import data_dir
    from genrec.data.registry import DATASETS

    root = data_dir()
    table = Table(title=f"datasets (data folder: {root})")
    for col in ("name", "format", "folder", "present"):
        table.add_column(col, no_wrap=True)
    table.add_column("description")
    for ds in DATASETS.values():
        present = (root / ds.folder).is_dir() and any((root / ds.folder).iterdir())
        table.add_row(ds.name, ds.format, ds.folder, "yes" if present else "-", ds.description)
    console.print(table)


@data_app.command("stats")
def stats(
    data: Path = typer.Argument(..., help="Prepared dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Counts, sequence-length distribution, density and item popularity skew of a prepared dataset."""
    from rich.table import Table

    from genrec.data import DataError, load_prepared
    from genrec.data.stats import dataset_stats

    try:
        s = dataset_stats(load_prepared(data))
    except DataError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    overview = Table(title=f"{s['name']} ({s['source_format']})", show_header=False)
    for key in ("num_users", "num_items", "num_interactions"):
        overview.add_row(key, f"{s[key]:,}")
    overview.add_row("density", f"{s['density']:.6f}")
    overview.add_row("repeat interactions", f"{s['repeat_interactions']:,}")
    overview.add_row("item text columns", ", ".join(s["item_text_columns"]) or "none")
    for key, value in s["item_popularity"].items():
        overview.add_row(f"popularity {key}", f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
    console.print(overview)
    if "cold_items" in s:
        cold = Table(title=f"cold items ({s['cold_items']['num_cold_items']:,})")
        for column in ("split", "rows", "cold target", "history holds a cold item", "history ends with one"):
            cold.add_column(column, justify="left" if column == "split" else "right")
        for name in ("valid", "test"):
            c = s["cold_items"][name]
            cold.add_row(
                name,
                f"{c['rows']:,}",
                f"{c['cold_target']:.2%}",
                f"{c['history_holds_cold_item']:.2%}",
                f"{c['history_ends_with_cold_item']:.2%}",
            )
        console.print(cold)
    dist = Table(title="distributions")
    dist.add_column("")
    keys = list(s["sequence_length"])
    for key in keys:
        dist.add_column(key, justify="right")
    for label, d in (
        ("sequence length", s["sequence_length"]),
        ("interactions per item", s["item_interactions"]),
    ):
        dist.add_row(label, *(f"{d[k]:.1f}" if isinstance(d[k], float) else str(d[k]) for k in keys))
    console.print(dist)
    hist = Table(title="users by sequence length")
    hist.add_column("length")
    hist.add_column("users", justify="right")
    hist.add_column("share", justify="right")
    for row in s["sequence_length_histogram"]:
        hist.add_row(row["range"], f"{row['count']:,}", f"{row['count'] / max(s['num_users'], 1):.1%}")
    console.print(hist)
    if s["skipped"] or s["filtered"]:
        console.print(f"skipped: {s['skipped']}  filtered: {s['filtered']}")


@data_app.command("cold-start")
def cold_start(
    prepared: Path = typer.Argument(..., help="A prepared (leave-one-out) dataset folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the cold-start dataset."),
    fraction: float = typer.Option(0.1, help="Share of the items that lose every training interaction."),
    seed: int = typer.Option(0, help="Seeds which items go cold."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset at --out."),
) -> None:
    """Derive the cold-start protocol's dataset: seeded cold items keep no training interaction."""
    from genrec.data import load_prepared, write_cold_start
    from genrec.data.errors import DataError

    try:
        path = write_cold_start(prepared, out, fraction=fraction, seed=seed, overwrite=force)
    except (DataError, ValueError) as e:
        fail(str(e))
    derived = load_prepared(path)
    split = derived.manifest["split"]
    console.print(
        f"wrote [bold]{path}[/]: {split['num_cold_items']:,} of {derived.num_items:,} items cold "
        f"({derived.manifest['cold_start']['interactions_removed']:,} training interactions removed, "
        f"{split['users_dropped']:,} users left without history dropped)"
    )


@data_app.command("hold-back")
def hold_back(
    prepared: Path = typer.Argument(
        ..., help="A prepared dataset folder (a cold-start one: the items come from its cold items)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the dataset without the held-back items."),
    count: int = typer.Option(100, min=1, help="How many items to hold back."),
    seed: int = typer.Option(0, help="Seeds which items are held back."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset at --out."),
) -> None:
    """Hold items back for a run trained without them: the dataset without them, their item table
    (for genrec add-items) and the users whose test target they are (for genrec eval --items-by-id)."""
    from genrec.data import load_prepared
    from genrec.data.errors import DataError
    from genrec.data.hold_back import HELD_BACK_DIR, write_held_back

    try:
        path = write_held_back(prepared, out, count=count, seed=seed, overwrite=force)
    except (DataError, ValueError) as e:
        fail(str(e))
    derived = load_prepared(path)
    info = derived.manifest["held_back"]
    folder = path / HELD_BACK_DIR
    evaluation = load_prepared(folder / "eval")
    console.print(
        f"wrote [bold]{path}[/]: {derived.num_items:,} items ({count:,} held back, "
        f"{info['interactions_removed']:,} interactions removed, {info['users_dropped']:,} users left with "
        f"fewer than 3 dropped); the held-back items: {folder / 'items.parquet'}; "
        f"the {evaluation.num_users:,} users whose test target is held back: {folder / 'eval'}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
