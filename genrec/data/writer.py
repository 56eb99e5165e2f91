"""Writing a prepared dataset directory (the layout in docs/contracts.md) with numpy and pyarrow.

Every format's reader ends here, and tests or scripts can build a small dataset from Python lists
with :func:`write_prepared`. The directory is written beside its destination and renamed into
place, so a reader never sees a half-written dataset.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import genrec
from genrec.data.errors import DataError
from genrec.data.split import LeaveOneOut
from genrec.files import default_mode, file_sha256, replace_dir

FORMAT_VERSION = 1
MIN_SEQUENCE_LENGTH = LeaveOneOut.min_length
STANDARD_ITEM_COLUMNS = ("item_idx", "item_id", "title", "brand", "categories", "image_path")



def file_digest(path: str | Path) -> dict:
    """``{"path", "sha256", "bytes"}`` of a source file, for the manifest."""
    return {"path": str(path), "sha256": file_sha256(path), "bytes": Path(path).stat().st_size}


def clean_text(value: Any) -> str | None:
    """A text field as stored: HTML entities decoded (``&amp;`` -> ``&``), whitespace trimmed, '' -> None."""
    if value is None:
        return None
    text = html.unescape(str(value)).strip()
    return text or None


def flatten_categories(value: Any) -> list[str]:
    """Categories as a flat list of unique strings, in first-seen order.

    Accepts None, one string, a list of strings, or Amazon's list of category paths (list of lists).
    """
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    stack = list(value)[::-1]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(list(v)[::-1])
        else:
            text = clean_text(v)
            if text is not None and text not in out:
                out.append(text)
    return out


def build_item_table(
    item_ids: Sequence[str],
    text: pa.Table | Mapping[str, Sequence] | Sequence[Mapping[str, Any]] | None = None,
) -> tuple[pa.Table, list[str]]:
    """The items table in index order, and the names of its columns that carry item text.

    ``item_ids[i]`` is item index i. ``text`` gives per-item fields keyed by an ``item_id`` column
    (a pyarrow table, a dict of columns, or a list of row dicts): ``title``, ``brand`` and
    ``categories`` are normalised (see :func:`clean_text`, :func:`flatten_categories`); any other
    column is kept as given (string columns cleaned). Items absent from ``text`` get nulls. An
    ``item_id`` in ``text`` that is not in ``item_ids`` is an error.
    """
    item_ids = [str(i) for i in item_ids]
    index = {item: i for i, item in enumerate(item_ids)}
    if len(index) != len(item_ids):
        dup = next(i for i in item_ids if item_ids.count(i) > 1)
        raise DataError(f"item id {dup!r} appears twice in the item catalogue")
    n = len(item_ids)
    columns: dict[str, list] = {}
    if text is not None:
        rows = _text_columns(text)
        if "item_id" not in rows:
            raise DataError(f"the item text table has no 'item_id' column (columns: {', '.join(rows)})")
        positions = []
        for row, item in enumerate(rows["item_id"]):
            pos = index.get(str(item))
            if pos is None:
                raise DataError(
                    f"item text row {row}: field 'item_id' {item!r} is not an item of the dataset"
                )
            positions.append(pos)
        for name, values in rows.items():
            if name in ("item_id", "item_idx"):
                continue
            full: list = [None] * n
            for pos, v in zip(positions, values, strict=True):
                full[pos] = v
            columns[name] = full
    title = [clean_text(v) for v in columns.pop("title", [None] * n)]
    brand = [clean_text(v) for v in columns.pop("brand", [None] * n)]
    categories = [flatten_categories(v) for v in columns.pop("categories", [None] * n)]
    image_path = [None if v is None else str(v) for v in columns.pop("image_path", [None] * n)]
    arrays = {
        "item_idx": pa.array(np.arange(n, dtype=np.int64)),
        "item_id": pa.array(item_ids, type=pa.string()),
        "title": pa.array(title, type=pa.string()),
        "brand": pa.array(brand, type=pa.string()),
        "categories": pa.array(categories, type=pa.list_(pa.string())),
    }
    text_columns = [c for c in ("title", "brand") if any(v is not None for v in arrays[c].to_pylist())]
    if any(categories):
        text_columns.append("categories")
    for name, values in columns.items():
        if all(v is None or isinstance(v, str) for v in values):
            values = [clean_text(v) for v in values]
            arr = pa.array(values, type=pa.string())
            if any(v is not None for v in values):
                text_columns.append(name)
        else:
            arr = pa.array(values)
        arrays[name] = arr
    arrays["image_path"] = pa.array(image_path, type=pa.string())
    return pa.table(arrays), text_columns


def _text_columns(text) -> dict[str, list]:
    if isinstance(text, pa.Table):
        return {name: text.column(name).to_pylist() for name in text.column_names}
    if isinstance(text, Mapping):
        cols = {str(k): list(v) for k, v in text.items()}
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise DataError(f"item text columns have different lengths: {sorted(lengths)}")
        return cols
    rows = list(text)
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in names]
    return {name: [r.get(name) for r in rows] for name in names}


def write_prepared_arrays(
    out_dir: str | Path,
    *,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    timestamps: np.ndarray,
    user_ids: Sequence[str],
    item_table: pa.Table,
    name: str,
    source_format: str,
    sources: Iterable[dict] = (),
    options: Mapping[str, Any] | None = None,
    skipped: Mapping[str, int] | None = None,
    item_text_columns: Sequence[str] = (),
    extra_manifest: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a prepared dataset from interaction arrays already in final order.

    ``user_idx`` must be sorted (each user's interactions contiguous, chronological within the
    user) and cover users 0..len(user_ids)-1; ``item_table`` comes from :func:`build_item_table`.
    Every user needs at least 3 interactions (leave-one-out). Returns the directory.
    """
    out_dir = Path(out_dir)
    check_destination(out_dir, overwrite)
    user_idx = np.ascontiguousarray(user_idx, dtype=np.int64)
    item_idx = np.ascontiguousarray(item_idx, dtype=np.int64)
    timestamps = np.ascontiguousarray(timestamps, dtype=np.int64)
    num_users, num_items = len(user_ids), item_table.num_rows
    offsets = _sequence_offsets(user_idx, item_idx, timestamps, user_ids, num_items)
    manifest = _prepared_manifest(
        name=name,
        source_format=source_format,
        num_users=num_users,
        num_items=num_items,
        num_interactions=len(item_idx),
        sources=sources,
        options=options,
        skipped=skipped,
        offsets=offsets,
        item_text_columns=item_text_columns,
        extra_manifest=extra_manifest,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, default_mode(0o777))
        _write_dataset_files(tmp, offsets, user_idx, item_idx, timestamps, user_ids, item_table, manifest)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _sequence_offsets(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    timestamps: np.ndarray,
    user_ids: Sequence[str],
    num_items: int,
) -> np.ndarray:
    """The CSR offsets of the users' sequences, after checking the arrays (see
    :func:`write_prepared_arrays`)."""
    num_users = len(user_ids)
    if not (len(user_idx) == len(item_idx) == len(timestamps)):
        raise DataError("user_idx, item_idx and timestamps must have the same length")
    if len(user_idx) and (np.any(np.diff(user_idx) < 0) or user_idx[0] < 0 or user_idx[-1] >= num_users):
        raise DataError("user_idx must be sorted and within 0..len(user_ids)-1")
    if len(item_idx) and (item_idx.min() < 0 or item_idx.max() >= num_items):
        raise DataError(f"item_idx must be within 0..{num_items - 1} (the item table's rows)")
    counts = np.bincount(user_idx, minlength=num_users)
    short = np.flatnonzero(counts < MIN_SEQUENCE_LENGTH)
    if len(short):
        u = int(short[0])
        raise DataError(
            f"{len(short)} users have fewer than {MIN_SEQUENCE_LENGTH} interactions, e.g. user "
            f"{user_ids[u]!r} with {int(counts[u])}; leave-one-out needs {MIN_SEQUENCE_LENGTH}"
        )
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _prepared_manifest(
    *,
    name: str,
    source_format: str,
    num_users: int,
    num_items: int,
    num_interactions: int,
    sources: Iterable[dict],
    options: Mapping[str, Any] | None,
    skipped: Mapping[str, int] | None,
    offsets: np.ndarray,
    item_text_columns: Sequence[str],
    extra_manifest: Mapping[str, Any] | None,
) -> dict:
    """manifest.json's content; ``extra_manifest`` may override any key but the creation time and version."""
    scheme = LeaveOneOut()
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source_format": source_format,
        "num_users": num_users,
        "num_items": num_items,
        "num_interactions": num_interactions,
        "sources": list(sources),
        "options": dict(options or {}),
        "skipped": {k: int(v) for k, v in (skipped or {}).items()},
        "split": scheme.describe(offsets),
        "item_text_columns": list(item_text_columns),
        **dict(extra_manifest or {}),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "genrec_version": genrec.__version__,
    }


def _write_dataset_files(
    tmp: Path,
    offsets: np.ndarray,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    timestamps: np.ndarray,
    user_ids: Sequence[str],
    item_table: pa.Table,
    manifest: dict,
) -> None:
    """The prepared dataset's files (sequences, tables, manifest) in the folder ``tmp``."""
    (tmp / "sequences").mkdir()
    np.save(tmp / "sequences" / "offsets.npy", offsets)
    np.save(tmp / "sequences" / "items.npy", item_idx)
    interactions = pa.table({"user_idx": user_idx, "item_idx": item_idx, "timestamp": timestamps})
    pq.write_table(interactions, tmp / "interactions.parquet")
    pq.write_table(item_table, tmp / "items.parquet")
    users = pa.table(
        {
            "user_idx": pa.array(np.arange(len(user_ids), dtype=np.int64)),
            "user_id": pa.array([str(u) for u in user_ids], type=pa.string()),
        }
    )
    pq.write_table(users, tmp / "users.parquet")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def check_destination(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise DataError(f"{out_dir} exists and is not a directory")
        if any(out_dir.iterdir()):
            if not (out_dir / "manifest.json").exists():
                raise DataError(
                    f"{out_dir} is a non-empty folder that is not a prepared dataset; refusing to replace it"
                )
            if not overwrite:
                raise DataError(
                    f"{out_dir} already holds a prepared dataset; pass overwrite=True (--force) to replace it"
                )
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def write_prepared(
    out_dir: str | Path,
    sequences: Sequence[Sequence[Any]],
    *,
    user_ids: Sequence[Any] | None = None,
    timestamps: Sequence[Sequence[int]] | None = None,
    item_ids: Sequence[Any] | None = None,
    items: pa.Table | Mapping[str, Sequence] | Sequence[Mapping[str, Any]] | None = None,
    name: str = "custom",
    source_format: str = "python",
    sources: Iterable[dict] = (),
    options: Mapping[str, Any] | None = None,
    skipped: Mapping[str, int] | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a prepared dataset from Python lists.

    Args:
        out_dir: the directory to create (must not hold a dataset unless ``overwrite``).
        sequences: one list per user of item ids (any value, compared as ``str``), oldest first.
            User i of ``sequences`` becomes user index i; each needs at least 3 items.
        user_ids: original user ids (default ``"0"``, ``"1"``, ...).
        timestamps: per-user timestamps parallel to ``sequences`` (default: positions 0, 1, ...).
        item_ids: the catalogue in index order (item index i is ``item_ids[i]``); by default items
            are indexed in order of first appearance in ``sequences``. Pass ``range(n)`` to make
            integer ids their own indices.
        items: item text: a pyarrow table, a dict of columns or a list of row dicts, each keyed by
            ``item_id``, with any of ``title``, ``brand``, ``categories`` and other text columns.

    Example::

        write_prepared(tmp / "toy", [[0, 1, 2], [1, 2, 3, 0]], item_ids=range(4),
                       items={"item_id": [0, 1, 2, 3], "title": ["a", "b", "c", "d"]})
    """
    if user_ids is None:
        user_ids = [str(u) for u in range(len(sequences))]
    if len(user_ids) != len(sequences):
        raise DataError(f"{len(user_ids)} user_ids for {len(sequences)} sequences")
    if timestamps is not None and len(timestamps) != len(sequences):
        raise DataError(f"{len(timestamps)} timestamp lists for {len(sequences)} sequences")
    catalogue, user_col, item_col, time_col = _interaction_columns(sequences, user_ids, timestamps, item_ids)
    table, text_columns = build_item_table(list(catalogue), items)
    return write_prepared_arrays(
        out_dir,
        user_idx=np.asarray(user_col, dtype=np.int64),
        item_idx=np.asarray(item_col, dtype=np.int64),
        timestamps=np.asarray(time_col, dtype=np.int64),
        user_ids=[str(u) for u in user_ids],
        item_table=table,
        name=name,
        source_format=source_format,
        sources=sources,
        options=options,
        skipped=skipped,
        item_text_columns=text_columns,
        extra_manifest={
            "timestamp_unit": "position" if timestamps is None else "given",
            **(extra_manifest or {}),
        },
        overwrite=overwrite,
    )


def _interaction_columns(
    sequences: Sequence[Sequence[Any]],
    user_ids: Sequence[Any],
    timestamps: Sequence[Sequence[int]] | None,
    item_ids: Sequence[Any] | None,
) -> tuple[dict[str, int], list[int], list[int], list[int]]:
    """The item catalogue (id -> index, in index order) and the interactions' user index, item index
    and timestamp columns, from :func:`write_prepared`'s arguments."""
    catalogue: dict[str, int] = {}
    if item_ids is not None:
        for item in item_ids:
            if str(item) in catalogue:
                raise DataError(f"item id {item!r} appears twice in item_ids")
            catalogue[str(item)] = len(catalogue)
    user_col, item_col, time_col = [], [], []
    for u, seq in enumerate(sequences):
        ts = list(range(len(seq))) if timestamps is None else list(timestamps[u])
        if len(ts) != len(seq):
            raise DataError(f"user {user_ids[u]!r}: {len(seq)} items but {len(ts)} timestamps")
        for item, t in zip(seq, ts, strict=True):
            key = str(item)
            if key not in catalogue:
                if item_ids is not None:
                    raise DataError(f"user {user_ids[u]!r}: item {item!r} is not in item_ids")
                catalogue[key] = len(catalogue)
            user_col.append(u)
            item_col.append(catalogue[key])
            time_col.append(int(t))
    return catalogue, user_col, item_col, time_col
