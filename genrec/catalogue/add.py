"""``add_items``: a trained run takes items added after training, without retraining.

The new items (rows with an id, a title and the attributes the run's encoders read, no
interactions) are embedded with the run's saved encoders, given semantic IDs by its saved
tokenizer (a disambiguation token no other item with the same codes uses), appended to the
model's per-item tables (marked as never trained), and written with the rest of the run into a
new run folder, which ``genrec.serve.run.load_run`` opens like any other: the decoding index is
built from the extended semantic IDs, so the new items can be recommended.

Nothing is written until every check passed and everything was computed; the new folder is
built under a temporary name beside its place and renamed at the end. The source run is only read.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.catalogue.model import extended_model
from genrec.catalogue.run_encoders import ENCODERS_DIR, NewItemsError, load_run_encoders
from genrec.catalogue.semantic_ids import assign_new_ids
from genrec.catalogue.table import check_new_items, read_items
from genrec.embed.state import embed_new_items, new_item_columns
from genrec.embed.text import TextEncoder
from genrec.eval.baselines import CoOccurrence
from genrec.files import array_sha256, file_sha256
from genrec.fusion import load_cooccurrence, save_cooccurrence
from genrec.models import model_class
from genrec.profile_similarity import SIMILARITY_FILE, load_similarity, save_similarity
from genrec.run_format import RunError, read_finished_run
from genrec.tokenize.artifacts import load_tokenizer
from genrec.train.checkpoint import save_model

NEW_ITEMS_DIR = "new_items"
#: Where a new item's own code prefix has no free disambiguation token left, the nearest of this many
#: alternatives (the last level's next-nearest codewords) that has one (genrec.catalogue.semantic_ids).
ID_CHOICES = 32
# Not carried into the new run: training state of the old catalogue, logs, temporaries.
SKIPPED = ("checkpoints", "best.safetensors", "tensorboard")
# Written anew (from the old run's version).
REWRITTEN = (
    "run.json",
    "items.parquet",
    "model.safetensors",
    "cooccurrence.safetensors",
    "similarity.safetensors",
    "tokenizer/semantic_ids.npy",
    "tokenizer/tokenizer.json",
    "tokenizer/trie.safetensors",
)


@dataclass
class AddedItems:
    """What :func:`add_items` did."""

    run_dir: Path
    """The new run folder."""
    item_idx: np.ndarray
    """int64 [n]: the new items' indices (after the run's items)."""
    item_ids: list[str]
    semantic_ids: np.ndarray
    """int64 [n, T]: their semantic IDs."""
    embeddings: np.ndarray
    """float32 [n, D]: their item embeddings (what the tokenizer quantized)."""
    model_update: str
    """How the model's per-item tables grew (genrec.catalogue.model.add_model_items)."""
    moved: int = 0
    """How many new items took a nearest free ID because their own code prefix was full."""


def add_items(run_dir: str | Path, items, out_dir: str | Path, *, device: str = "auto") -> AddedItems:
    """Write ``out_dir``: the run ``run_dir`` with the items of ``items`` (a parquet file or a
    pyarrow table: item_id, title and the columns the run's encoders read) added; see the module
    docstring. ``device`` runs the text model, where the run's encoder has one.

    Raises NewItemsError (bad input, or a run that cannot take new items) or RunError (a damaged
    run folder), having written nothing.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_out_dir(run_dir, out_dir)
    info, config, codes, level_sizes = _read_run(run_dir)
    _, state, tensors = load_run_encoders(run_dir)
    if not (run_dir / "items.parquet").is_file():
        raise RunError(f"{run_dir / 'items.parquet'} is missing: the run folder is incomplete")
    run_items = pq.read_table(run_dir / "items.parquet")
    if run_items.num_rows != len(codes):
        raise NewItemsError(
            f"{run_dir / 'items.parquet'} lists {run_items.num_rows} items, the semantic IDs {len(codes)}"
        )
    existing = {str(v) for v in run_items.column("item_id").to_pylist()}

    table, where, root = read_items(items)
    read = {c: kind for c, kind in new_item_columns(state).items() if c not in ("item_id", "title")}
    columns = {"item_id": "id", "title": "title", **read}
    ids = check_new_items(table, where, columns, existing)
    N, n = len(codes), len(ids)
    item_idx = np.arange(N, N + n, dtype=np.int64)

    try:
        embeddings = embed_new_items(state, tensors, table, item_idx, where=where, root=root, device=device)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # a file's images, the text model ...
        raise NewItemsError(f"{where}: the new items cannot be embedded: {e}") from None
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    choices = tokenizer.encode_choices(embeddings, ID_CHOICES)
    new_ids = assign_new_ids(
        codes,
        choices,
        level_sizes,
        [f"{where}: row {i + 1} (item_id {v!r})" for i, v in enumerate(ids)],
    )
    all_codes = np.concatenate([codes, new_ids])
    model, how = extended_model(config, level_sizes, run_dir / "model.safetensors", N, embeddings)
    similarity = _extended_similarity(run_dir, config, state, table, embeddings, N, where, device)

    used = [c for c in columns if c != "item_id"]
    new_rows = pa.table(
        {
            "item_idx": pa.array(item_idx),
            "item_id": pa.array(ids, pa.string()),
            **{c: table.column(c) for c in used},
        }
    )
    _write_run(
        run_dir,
        out_dir,
        info,
        run_items,
        new_rows,
        all_codes,
        model,
        where,
        _source_sha256(items),
        similarity,
    )
    moved = int((new_ids[:, :-1] != choices[:, 0]).any(axis=1).sum())
    return AddedItems(out_dir, item_idx, ids, new_ids, embeddings, how, moved)


def _check_out_dir(run_dir: Path, out_dir: Path) -> None:
    if not (run_dir / "run.json").is_file():
        raise NewItemsError(f"{run_dir} is not a finished genrec run (no run.json)")
    if out_dir.exists() or out_dir.is_symlink():
        raise NewItemsError(f"{out_dir} already exists; name a new folder for the updated run (--out)")
    resolved, source = out_dir.resolve(), run_dir.resolve()
    if resolved == source or resolved.is_relative_to(source):
        raise NewItemsError(
            f"{out_dir} is inside the run {run_dir}; the updated run goes in a folder of its own"
        )
    if not out_dir.parent.is_dir():
        raise NewItemsError(f"{out_dir.parent} does not exist (the folder the updated run goes in)")


def _read_run(run_dir: Path):
    """run.json, the config, the semantic IDs (checked against run.json) and level sizes; a run
    whose items are their own IDs cannot take new items."""

    run = read_finished_run(run_dir)
    if model_class(run.config.model).serving != "beam_search":
        raise NewItemsError(
            f"{run_dir} is a {run.config.model.kind} run: its items are their own IDs, learned in training; "
            "only semantic-ID models can take new items"
        )
    return run.info, run.config, run.codes, run.level_sizes


def _source_sha256(items) -> str | None:
    if isinstance(items, (str, Path)):
        return file_sha256(Path(items))
    return None


def _extended_similarity(run_dir: Path, config, state: dict, table, embeddings, N: int, where: str, device):
    """The run's profile embeddings (genrec.profile_similarity) with the new items', or None for a
    run without them: the new items' embeddings ("content"), or their text through the run's text
    model ("text")."""

    if not getattr(config.model, "profile_embeddings", ""):
        return None
    try:
        similarity = load_similarity(run_dir / SIMILARITY_FILE, N)
    except (FileNotFoundError, ValueError) as e:
        raise RunError(str(e)) from None
    if similarity.source == "content":
        return similarity.extended(embeddings)
    # The settings the profile rows were embedded with; runs saved before they were recorded: the
    # encoder's own text settings (a text encoder's, or a multimodal encoder's text modality).
    saved = state.get("spec") or {}
    spec = similarity.text_spec or (saved if state.get("encoder") == "text" else saved.get("text"))
    if spec is None:
        raise NewItemsError(
            f"{run_dir}: the run ranks with text similarity, but its encoder ({state.get('encoder')}) "
            "reads no text to embed new items with"
        )

    try:
        _, rows = TextEncoder.embed_new_texts(spec, table, where=where, device=device)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise NewItemsError(f"{where}: the new items' text cannot be embedded: {e}") from None
    return similarity.extended(rows)


def _write_run(
    run_dir: Path,
    out_dir: Path,
    info: dict,
    run_items,
    new_rows,
    codes,
    model,
    where,
    source_sha,
    similarity=None,
):
    """Stage the updated run beside ``out_dir`` and rename it into place."""

    staged = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        _copy_run(run_dir, staged)
        N, n = run_items.num_rows, new_rows.num_rows
        np.save(staged / "tokenizer" / "semantic_ids.npy", codes, allow_pickle=False)
        sha = array_sha256(np.ascontiguousarray(codes, dtype=np.int64))
        tok_info = json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text())
        tok_info.update({"num_items": N + n, "semantic_ids_sha256": sha})
        (staged / "tokenizer" / "tokenizer.json").write_text(json.dumps(tok_info, indent=2) + "\n")

        batch_file = _write_items(staged, run_items, new_rows)

        save_model(staged / "model.safetensors", model)
        if (run_dir / "cooccurrence.safetensors").is_file():
            _extend_cooccurrence(run_dir / "cooccurrence.safetensors", staged / "cooccurrence.safetensors", n)
        if similarity is not None:
            save_similarity(staged / SIMILARITY_FILE, similarity)

        batch = {"file": batch_file, "first_item_idx": N, "count": n, "source": where, "source_sha256": source_sha}
        record = _new_items_record(info, run_dir, N, batch)
        updated = {**info, "inputs": {**(info.get("inputs") or {}), "semantic_ids": sha}, "new_items": record}
        (staged / "run.json").write_text(json.dumps(updated, indent=2, default=str) + "\n")
        if out_dir.exists():
            raise NewItemsError(f"{out_dir} appeared while the updated run was written; nothing was replaced")
        os.replace(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _write_items(staged: Path, run_items, new_rows) -> str:
    """The run's item table with the new rows appended (columns the new rows lack are null), and
    the new rows as the next batch file of the run's added items; returns that file's name."""
    n = new_rows.num_rows
    appended = {
        name: new_rows.column(name).cast(run_items.schema.field(name).type)
        for name in run_items.column_names
        if name in new_rows.column_names
    }
    for name in [c for c in run_items.column_names if c not in appended]:
        appended[name] = pa.nulls(n, run_items.schema.field(name).type)
    pq.write_table(
        pa.concat_tables([run_items, pa.table(appended).select(run_items.column_names)]),
        staged / "items.parquet",
    )
    folder = staged / NEW_ITEMS_DIR
    batches = sorted(folder.glob("batch-*.parquet")) if folder.is_dir() else []
    folder.mkdir(exist_ok=True)
    batch_file = f"{NEW_ITEMS_DIR}/batch-{len(batches) + 1:04d}.parquet"
    pq.write_table(new_rows, staged / batch_file)
    return batch_file


def _new_items_record(info: dict, run_dir: Path, trained: int, batch: dict) -> dict:
    """run.json's "new_items": every batch added so far, this one last, with where it came from."""
    previous = info.get("new_items") or {}
    batch = {
        **batch,
        "from_run": str(run_dir),
        "from_semantic_ids": (info.get("inputs") or {}).get("semantic_ids"),
        "added": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return {
        "trained_items": previous.get("trained_items", trained),
        "num_items": trained + batch["count"],
        "batches": [*previous.get("batches", []), batch],
    }


def _copy_run(run_dir: Path, staged: Path) -> None:
    """The run's files, less training state (checkpoints), logs and what is written anew."""
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in SKIPPED:
            continue
        if path.is_symlink():
            raise RunError(f"{path} is a symbolic link; a run folder holds only files genrec wrote")
        if rel.as_posix() in REWRITTEN:
            continue
        target = staged / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    (staged / "tokenizer").mkdir(parents=True, exist_ok=True)
    if not (staged / ENCODERS_DIR).is_dir():
        raise NewItemsError(f"{run_dir / ENCODERS_DIR} vanished while the run was copied")


def _extend_cooccurrence(source: Path, target: Path, n: int) -> None:
    """The co-occurrence statistics with n items that co-occur with nothing (no training interactions)."""

    cooc = load_cooccurrence(source)
    arrays = cooc.arrays()
    arrays["indptr"] = np.concatenate([arrays["indptr"], np.full(n, arrays["indptr"][-1], dtype=np.int64)])
    arrays["train_counts"] = np.concatenate([arrays["train_counts"], np.zeros(n, dtype=np.int64)])
    save_cooccurrence(target, CoOccurrence.from_arrays(arrays, cooc.cfg))


__all__ = ["AddedItems", "add_items"]
