"""Reading and checking a table of new items before anything is computed or written.

Every column a run's encoders read must be there with a usable type; ``item_id`` and ``title``
are required in every row; ids must be new (unique in the file, absent from the run). Problems
are reported together (up to :data:`MAX_PROBLEMS`), each naming the file, the row (1-based, the
file's data rows) and the column.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from genrec.catalogue.run_encoders import NewItemsError

MAX_PROBLEMS = 10
#: Column kinds: what a column may hold. "id" and "title": strings in every row; "text" and
#: "attribute": strings or lists of strings, nulls allowed; "path": strings, nulls allowed.
KINDS = ("id", "title", "text", "attribute", "path")


def read_items(items) -> tuple[object, str, Path | None]:
    """(pyarrow table, its name in messages, the folder relative image paths start from) of a
    parquet file path or a pyarrow table."""
    if isinstance(items, pa.Table):
        return items, "the new items table", None
    path = Path(items)
    if not path.is_file():
        raise NewItemsError(f"{path}: no such file (new items are a parquet file with item_id, title, ...)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise NewItemsError(f"{path}: not a readable parquet file ({e})") from None
    return table, str(path), path.parent


def _is_text(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_text_list(t) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (
        _is_text(t.value_type) or pa.types.is_null(t.value_type)
    )


def _type_ok(kind: str, t) -> bool:
    if kind in ("id", "title"):
        return _is_text(t)
    if kind == "path":
        return _is_text(t) or pa.types.is_null(t)
    return _is_text(t) or _is_text_list(t) or pa.types.is_null(t)


_EXPECTED = {
    "id": "strings",
    "title": "strings",
    "text": "strings or lists of strings",
    "attribute": "strings or lists of strings",
    "path": "strings (file paths)",
}


def check_new_items(table, where: str, columns: Mapping[str, str], existing_ids) -> list[str]:
    """The new item ids of ``table`` in row order, after checking it (module docstring).

    ``columns``: column -> kind (:data:`KINDS`); ``existing_ids``: the run's item ids (a set or a
    mapping). Raises NewItemsError listing the problems.
    """
    names = table.column_names
    missing = [c for c in columns if c not in names]
    if missing:
        needed = ", ".join(f"{c} ({_EXPECTED[k]})" for c, k in columns.items())
        raise NewItemsError(
            f"{where}: missing column(s) {', '.join(missing)}; this run's new items need {needed} "
            f"(values may be null except item_id and title). The file has: {', '.join(names) or 'no columns'}"
        )
    wrong = [
        f"column {c!r} holds {table.schema.field(c).type}, expected {_EXPECTED[k]}"
        for c, k in columns.items()
        if not _type_ok(k, table.schema.field(c).type)
    ]
    if wrong:
        raise NewItemsError(f"{where}: " + "; ".join(wrong))
    if table.num_rows == 0:
        raise NewItemsError(f"{where}: no rows; nothing to add")
    problems: list[str] = []

    def problem(row: int, column: str, message: str, item_id=None) -> None:
        if len(problems) < MAX_PROBLEMS:
            label = f"row {row + 1}" + (f" (item_id {item_id!r})" if item_id else "")
            problems.append(f"{label}, column {column!r}: {message}")

    ids = table.column("item_id").to_pylist()
    first_row: dict[str, int] = {}
    for row, item_id in enumerate(ids):
        if item_id is None or not item_id.strip():
            problem(row, "item_id", "the id is empty")
        elif item_id != item_id.strip():
            problem(row, "item_id", "the id has leading or trailing spaces", item_id)
        elif item_id in first_row:
            problem(row, "item_id", f"the id repeats row {first_row[item_id] + 1}", item_id)
        elif item_id in existing_ids:
            problem(row, "item_id", "the run already has an item with this id", item_id)
        else:
            first_row[item_id] = row
    for column, kind in columns.items():
        if kind != "title":
            continue
        for row, value in enumerate(table.column(column).to_pylist()):
            if value is None or not value.strip():
                problem(row, column, "the text is missing (every new item needs a title)", ids[row])
    if problems:
        more = " (and more)" if len(problems) == MAX_PROBLEMS else ""
        raise NewItemsError(f"{where}: " + "; ".join(problems) + more)
    return [str(v) for v in ids]


__all__ = ["KINDS", "check_new_items", "read_items"]
