"""Whom a batch job recommends for (``genrec recommend --users all|FILE``): every test user of the
run's dataset, or the users a file lists (Parquet, CSV or one id per line), each unknown or
repeated id an error naming its line or row. numpy and pyarrow only."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class BatchRecommendError(ValueError):
    """Bad input or a staging folder that belongs to other arguments; the message names the file
    (and line) and nothing has been written."""


def read_user_ids(path: Path) -> list[tuple[str, str]]:
    """(user id, where it was read: "line N" / "row N") per entry of a users file, in file order.

    ``.parquet``: the column ``user_id`` (or the only column). ``.csv``: a header line naming
    ``user_id`` (or a single column), then one row per user. Anything else: one id per line, blank
    lines skipped. Ids are compared as strings, surrounding spaces removed.
    """
    path = Path(path)
    if not path.is_file():
        raise BatchRecommendError(f"{path}: no such users file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise BatchRecommendError(f"{path}: not a readable parquet file ({e})") from None
        name = _id_column(table.column_names, path)
        values = table.column(name).to_pylist()
        out = []
        for i, v in enumerate(values, 1):
            if v is None or not str(v).strip():
                raise BatchRecommendError(f"{path}: row {i} has an empty {name}")
            out.append((str(v).strip(), f"row {i}"))
        return out
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise BatchRecommendError(f"{path}: line {line} is not valid UTF-8") from None
    if suffix == ".csv":
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if header is None:
            raise BatchRecommendError(f"{path}: empty (expected a header line naming user_id)")
        col = [h.strip() for h in header].index(_id_column([h.strip() for h in header], path))
        out = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(header):
                raise BatchRecommendError(f"{path}: {where} has {len(row)} fields, the header {len(header)}")
            if not row[col].strip():
                raise BatchRecommendError(f"{path}: {where} has an empty user id")
            out.append((row[col].strip(), where))
        return out
    return [(line.strip(), f"line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _id_column(columns: list[str], path: Path) -> str:
    if "user_id" in columns:
        return "user_id"
    if len(columns) == 1:
        return columns[0]
    raise BatchRecommendError(f"{path}: no user_id column (columns: {', '.join(columns)})")


def select_rows(dataset, users: str | Path) -> np.ndarray:
    """Rows of the dataset's test split to recommend for: all of them (``"all"``), or the users a
    file lists (read_user_ids), in file order. Unknown or repeated ids are errors naming the line."""
    test = dataset.split("test")
    if isinstance(users, str) and users == "all":
        return np.arange(len(test), dtype=np.int64)
    path = Path(users)
    entries = read_user_ids(path)
    if not entries:
        raise BatchRecommendError(f"{path}: lists no user ids")
    index_of = {v: i for i, v in enumerate(user_ids_of(dataset))}
    row_of = np.full(dataset.num_users, -1, dtype=np.int64)
    row_of[test.users] = np.arange(len(test))
    rows, seen = [], {}
    for user_id, where in entries:
        u = index_of.get(user_id)
        if u is None:
            raise BatchRecommendError(
                f"{path}: {where}: user id {user_id!r} is not a user of dataset {dataset.name} ({dataset.path})"
            )
        if user_id in seen:
            raise BatchRecommendError(f"{path}: {where}: user id {user_id!r} repeats {seen[user_id]}")
        if row_of[u] < 0:
            raise BatchRecommendError(
                f"{path}: {where}: user id {user_id!r} has no test history in {dataset.path}"
            )
        seen[user_id] = where
        rows.append(row_of[u])
    return np.asarray(rows, dtype=np.int64)


def user_ids_of(dataset) -> list[str]:
    """The original user ids, position = user index."""
    table = dataset.user_table()
    ids = [None] * dataset.num_users
    for u, v in zip(table.column("user_idx").to_pylist(), table.column("user_id").to_pylist(), strict=True):
        ids[u] = str(v)
    return ids
