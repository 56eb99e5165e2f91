"""``genrec recommend``: top-k items for a history, or for many users into a parquet file
(genrec.batch_recommend), from a finished ``genrec train`` run; ``genrec add-items``: items added
to such a run without retraining (genrec.catalogue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text


def recommend(
    run: Path = typer.Option(..., "--run", help="A run folder written by genrec train."),
    history: str = typer.Option(
        None, "--history", help="Item ids, oldest first, comma-separated (one history)."
    ),
    k: int = typer.Option(10, "--k", min=1, help="How many items to recommend."),
    by_index: bool = typer.Option(
        False, "--by-index", help="--history holds item indices, not item ids."
    ),
    user: int = typer.Option(None, "--user", help="The user's index (for models with user tokens)."),
    beam: int = typer.Option(
        None, "--beam", min=1, help="Beam size (default: the run's eval.beam_size, at least k)."
    ),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    users: str = typer.Option(
        None,
        "--users",
        help="Batch mode: 'all' (every user of the run's dataset) or a file of user ids (.txt: one a "
        "line; .csv: a user_id column; .parquet: a user_id column); needs --out.",
    ),
    out: Path = typer.Option(
        None, "--out", help="Batch mode: the parquet file to write (one row per user and rank)."
    ),
    batch_users: int = typer.Option(
        None,
        "--batch-users",
        min=1,
        help="Batch mode: users per batch (default: the run's eval.batch_users).",
    ),
    restart: bool = typer.Option(
        False, "--restart", help="Batch mode: start over, discarding the finished batches in <out>.parts."
    ),
    dataset: Path = typer.Option(
        None,
        "--dataset",
        help="Batch mode: the run's prepared dataset, if it moved from where run.json says.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Batch mode: a progress bar."),
) -> None:
    """Recommend the k most likely next items after --history, with titles and scores; or, with
    --users and --out, the top k of many users into a parquet file (resumable batches)."""
    console = Console()
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is None:
        raise typer.BadParameter(f"{device!r}: use cpu, cuda, cuda:N or auto", param_hint="--device")
    if (history is None) == (users is None):
        raise typer.BadParameter("give either --history (one list) or --users with --out (a batch)")
    if users is not None:
        if out is None:
            raise typer.BadParameter(
                "--users needs --out (the parquet file to write)", param_hint="--out"
            )
        if by_index or user is not None or as_json:
            raise typer.BadParameter("--by-index, --user and --json apply to --history only")
        _batch(console, run, users, out, k, batch_users, device, beam, dataset, restart, progress)
        return
    for name, value in (("--out", out), ("--batch-users", batch_users), ("--dataset", dataset)):
        if value is not None:
            raise typer.BadParameter(f"{name} applies to batch mode (--users) only")
    _one_history(console, run, history, k, by_index, user, device, beam, as_json)


def add_items(
    run: Path = typer.Option(..., "--run", help="A run folder written by genrec train (only read)."),
    items: Path = typer.Option(
        ...,
        "--items",
        help="A parquet file of new items: item_id, title and the attribute columns the run's "
        "encoders read (no interactions).",
    ),
    out: Path = typer.Option(..., "--out", help="The updated run folder to write (must not exist)."),
    device: str = typer.Option(
        "auto", help="Where the text model runs, if the run has one: cpu, cuda or auto."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Add items to a trained run without retraining: embed them with the run's encoders, give them
    semantic IDs with its tokenizer, and write the updated run to --out (genrec recommend --run OUT)."""
    from genrec.catalogue import add_items as add
    from genrec.run_format import RunError
    from genrec.train.checkpoint import CheckpointError

    console = Console()
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is None:
        raise typer.BadParameter(f"{device!r}: use cpu, cuda, cuda:N or auto", param_hint="--device")
    try:
        added = add(run, items, out, device=device)
    except (RunError, CheckpointError, ValueError, FileNotFoundError) as e:
        console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        console.print(f"nothing was written; {run} is unchanged", soft_wrap=True)
        raise typer.Exit(1) from None
    rows = [
        {"item_id": i, "item_idx": int(x), "semantic_id": [int(t) for t in sid]}
        for i, x, sid in zip(added.item_ids, added.item_idx, added.semantic_ids, strict=True)
    ]
    if as_json:
        typer.echo(json.dumps({"run": str(added.run_dir), "added": rows, "moved": added.moved}, indent=2))
        return
    table = Table(
        title=f"{len(rows)} item(s) added -> {added.run_dir}",
        caption=f"model: {added.model_update}; "
        + (
            f"{added.moved} item(s) took the nearest free ID (their own codes were full); "
            if added.moved
            else ""
        )
        + f"recommend with: genrec recommend --run {added.run_dir}",
    )
    for col in ("item_id", "item_idx", "semantic ID"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["item_id"], str(r["item_idx"]), "-".join(str(t) for t in r["semantic_id"]))
    console.print(table)


def _one_history(console, run, history: str, k: int, by_index: bool, user, device: str, beam, as_json: bool):
    """genrec recommend --history: one list, printed as a table or JSON."""
    from genrec.run_format import RunError
    from genrec.serve.run import load_run
    from genrec.train.checkpoint import CheckpointError

    ids = [part.strip() for part in history.split(",") if part.strip()]
    try:
        rec = load_run(run, device=device, beam_size=beam)
        if getattr(rec.recommender, "beam_size", k) < k:  # inner-product runs have no beam
            rec.recommender.beam_size = k
        users = None if user is None else [user]
        if by_index:
            try:
                indices = [int(i) for i in ids]
            except ValueError:
                raise typer.BadParameter(
                    "--by-index needs integer item indices", param_hint="--history"
                ) from None
            out = rec.recommend_indices([indices], k, users)[0]
        else:
            out = rec.recommend_ids([ids], k, users)[0]
    except (RunError, CheckpointError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) else str(e)
        console.print(Text.assemble(("error: ", "bold red"), str(message)), soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in out], indent=2))
        return
    table = Table(
        title=f"top {k} after {len(ids)} item(s) ({run})", caption=_score_meaning(rec.recommender)
    )
    for col in ("rank", "item_id", "title", "score"):
        table.add_column(col)
    for rank, r in enumerate(out, 1):
        table.add_row(str(rank), r.item_id, r.title or "", f"{r.score:.3f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend)
    app.command("add-items")(add_items)


def _batch(console, run, users, out, k, batch_users, device, beam, dataset, restart, progress) -> None:
    """genrec recommend --users: genrec.batch_recommend, with a clear message for what is refused."""
    from genrec.batch_recommend import BatchRecommendError, recommend_to_parquet
    from genrec.run_format import RunError
    from genrec.train.checkpoint import CheckpointError

    try:
        done = recommend_to_parquet(
            run,
            users,
            out,
            k=k,
            batch_users=batch_users,
            device=device,
            beam_size=beam,
            dataset_dir=dataset,
            restart=restart,
            progress=progress,
        )
    except (BatchRecommendError, RunError, CheckpointError) as e:
        console.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        console.print(f"nothing was written to {out}", soft_wrap=True)
        raise typer.Exit(1) from None
    rate = done.users_per_second
    console.print(
        f"{done.users} users -> {done.out}: {len(done.computed)} of {done.batches} batches decoded"
        + (f", {len(done.skipped)} reused from an interrupted run" if done.skipped else "")
        + (f" ({done.seconds:.1f}s, {rate:.1f} users/s)" if rate else ""),
        soft_wrap=True,
    )


def _score_meaning(recommender) -> str:
    weight = getattr(recommender, "rerank_weight", None)
    if weight is None:
        return "score: inner product of the history and item vectors"
    if weight:
        return f"score: log P(semantic ID) + {weight:g} x log P(item) of the item head"
    return "score: log-probability of the item's semantic ID"
