"""Fuzzing ``genrec data prepare --format table`` (its Python entry point) with generated tables:
random column types (text, integers, floats, lists, date-times), NaN/None/empty values, duplicate
rows, odd timestamps and non-UTF-8 bytes, as CSV or Parquet.

Every outcome must be either a prepared dataset that loads with the counts the input implies
(interactions = rows, users and items = distinct ids, each user's sequence length), or a
DataFormatError naming the file and a line, and a field unless the problem is a whole row (a
duplicate) or the whole file (not parseable as CSV). Never another exception.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from genrec.data import load_prepared
from genrec.data.errors import DataFormatError
from genrec.data.prepare import prepare_dataset

pl = pytest.importorskip("polars")

TEXT_IDS = st.sampled_from(["a", "b", "c", "NaN", "1", "01", "é", 'q"uote', "com,ma", "new\nline", "", "  "])
INT_IDS = st.integers(-3, 5) | st.sampled_from([2**62, -(2**62)])
FLOAT_IDS = st.sampled_from([0.0, 1.0, 2.5, 1e20, float("nan"), float("inf"), float("-inf")])
INT_TIMES = st.integers(-5, 10) | st.sampled_from([2**62, 2**63 - 1])
FLOAT_TIMES = st.sampled_from([0.0, 1.0, 2.0, 3.5, -1.0, 1e30, 9.3e18, float("nan"), float("inf")])
TEXT_TIMES = st.sampled_from(
    [
        "1",
        "2",
        " 3 ",
        "-4",
        "2020-01-01",
        "2020-01-02T10:00:00",
        "2021-13-40",
        "yesterday",
        "1e3",
        "",
        "9" * 25,
    ]
)


@st.composite
def column(draw, role: str, n: int, parquet: bool):
    """A column of ``n`` values of one drawn kind, with None sprinkled in (None: a missing value)."""
    if role == "time":
        kinds = ["int", "float", "text", "datetime", "list"] if parquet else ["text"]
    else:
        kinds = ["text", "int", "float", "list"] if parquet else ["text"]
    kind = draw(st.sampled_from(kinds))
    pool = {
        "text": TEXT_TIMES if role == "time" else TEXT_IDS,
        "int": INT_TIMES if role == "time" else INT_IDS,
        "float": FLOAT_TIMES if role == "time" else FLOAT_IDS,
        "datetime": st.datetimes(),
        "list": st.lists(st.integers(0, 3), min_size=1, max_size=2),
    }[kind]
    values = draw(st.lists(pool, min_size=n, max_size=n))
    if draw(st.booleans()):  # some missing values
        holes = draw(st.lists(st.integers(0, n - 1), max_size=2))
        values = [None if i in holes else v for i, v in enumerate(values)]
    return kind, values


VALID_IDS = {
    "text": st.sampled_from(["a", "b", "c", "d", "NaN", "é", 'q"uote', "com,ma", "new\nline", " x"]),
    "int": st.integers(-3, 6),
    "float": st.sampled_from([0.0, 1.0, 2.5, -7.0, 1e20]),
}
BAD_CELLS = {
    "text": st.sampled_from([None, "", "   "]),
    "int": st.none(),
    "float": st.sampled_from([None, float("nan"), float("inf")]),
}


@st.composite
def valid_tables(draw):
    """Tables most of whose rows are good: a few users with 3-5 interactions each, then perhaps
    one cell made bad, a row repeated or a byte broken."""
    parquet = draw(st.booleans())
    id_kinds = ["text", "int", "float"] if parquet else ["text"]
    user_kind, item_kind = draw(st.sampled_from(id_kinds)), draw(st.sampled_from(id_kinds))
    time_kind = draw(st.sampled_from(["int", "float", "datetime", "text"] if parquet else ["text"]))
    iso = draw(st.booleans())
    users = draw(st.lists(VALID_IDS[user_kind], min_size=1, max_size=4, unique=True))
    rows = []
    for u in users:
        for t in range(draw(st.integers(3, 5))):
            item = draw(VALID_IDS[item_kind])
            moment = __import__("datetime").datetime(2020, 1, 1 + t)
            time = {
                "int": t,
                "float": float(t),
                "datetime": moment,
                "text": moment.isoformat() if iso else str(t),
            }[time_kind]
            if all((r[0], r[1], r[2]) != (u, item, time) for r in rows):
                rows.append((u, item, time))
    flaw = draw(st.sampled_from(["none", "cell", "duplicate", "byte"]))
    if flaw == "cell":
        i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 2))
        kind = (user_kind, item_kind, time_kind)[j]
        bad = draw(
            BAD_CELLS.get(kind, st.none())
            if j < 2
            else st.sampled_from(
                {
                    "int": [None],
                    "float": [None, float("nan"), 1e30, 0.5],
                    "datetime": [None],
                    "text": ["", "soon", "1.5"],
                }[time_kind]
            )
        )
        row = list(rows[i])
        row[j] = bad
        rows[i] = tuple(row)
    elif flaw == "duplicate":
        rows.append(draw(st.sampled_from(rows)))
    return parquet, (user_kind, item_kind, time_kind), rows, flaw == "byte" and not parquet


@st.composite
def random_tables(draw):
    """Anything: every column of a drawn kind (lists and date-times too) with bad values mixed in."""
    parquet = draw(st.booleans())
    n = draw(st.integers(1, 12))
    users = draw(st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=n, max_size=n))
    # Mostly plain user ids (so valid tables occur), sometimes a drawn column of any kind.
    user_kind, user_values = ("text", users) if draw(st.booleans()) else draw(column("id", n, parquet))
    item_kind, item_values = draw(column("id", n, parquet))
    if draw(st.booleans()):
        time_kind, time_values = ("int", list(range(n))) if parquet else ("text", [str(t) for t in range(n)])
    else:
        time_kind, time_values = draw(column("time", n, parquet))
    rows = list(zip(user_values, item_values, time_values, strict=True))
    if draw(st.booleans()) and rows:  # duplicate rows
        rows += draw(st.lists(st.sampled_from(rows), max_size=2))
    bad_byte = not parquet and draw(st.booleans()) and draw(st.booleans())
    return parquet, (user_kind, item_kind, time_kind), rows, bad_byte


tables = valid_tables() | random_tables()


def write(folder: Path, parquet: bool, kinds, rows, bad_byte: bool) -> Path:
    columns = {
        "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows],
        "timestamp": [r[2] for r in rows],
    }
    if parquet:
        path = folder / "t.parquet"
        types = {
            "text": pl.String,
            "int": pl.Int64,
            "float": pl.Float64,
            "datetime": pl.Datetime("us"),
            "list": pl.List(pl.Int64),
        }
        frame = pl.DataFrame(
            [
                pl.Series(name, values, dtype=types[kind], strict=False)
                for (name, values), kind in zip(columns.items(), kinds, strict=True)
            ]
        )
        frame.write_parquet(path)
        return path
    path = folder / "t.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    data = buffer.getvalue().encode()
    if bad_byte:
        cut = data.rfind(b",")
        data = data[:cut] + b"\xff" + data[cut:]
    path.write_bytes(data)
    return path


def key(value, kind: str) -> str | None:
    """The id a value stands for, or None when it is not a valid id (missing, empty, NaN, nested)."""
    if value is None or kind == "list":
        return None
    if kind == "float":
        return None if not math.isfinite(value) else repr(float(value))
    if kind == "text":
        return None if value.strip() == "" else value
    return str(value)


def valid_time(value, kind: str) -> bool:
    if value is None or kind == "list":
        return False
    if kind == "float":
        return math.isfinite(value) and abs(value) < 2.0**63 and value == round(value)
    return kind != "text"  # text times: the reader decides (integers or ISO date-times)


@settings(max_examples=int(__import__("os").environ.get("GENREC_FUZZ_EXAMPLES", "300")))
@given(tables)
def test_prepare_table_gives_a_dataset_or_a_located_error(case):
    parquet, kinds, rows, bad_byte = case
    with tempfile.TemporaryDirectory() as tmp:
        source = write(Path(tmp), parquet, kinds, rows, bad_byte)
        try:
            out = prepare_dataset("table", source, Path(tmp) / "out")
        except DataFormatError as e:
            event(f"error: {e.reason or 'other'}, field {e.field}")
            assert e.path == str(source)
            whole_row = e.reason == "duplicates"
            whole_file = "not a readable CSV file" in str(e)
            assert e.line is not None or whole_file, str(e)
            assert e.field is not None or whole_row or whole_file, str(e)
            assert not (Path(tmp) / "out").exists()
            return
        # Prepared: every row was a valid interaction, so the counts follow from the rows.
        event(f"prepared ({'parquet' if parquet else 'csv'})")
        user_kind, item_kind, time_kind = kinds
        users = [key(r[0], user_kind) for r in rows]
        items = [key(r[1], item_kind) for r in rows]
        assert None not in users and None not in items, "an invalid id was accepted"
        assert time_kind == "text" or all(valid_time(r[2], time_kind) for r in rows), (
            "an invalid time was accepted"
        )
        assert not bad_byte
        data = load_prepared(out)
        assert data.num_interactions == len(rows)
        if item_kind != "float" and user_kind != "float":  # float ids: polars spells them its own way
            assert data.num_users == len(set(users)) and data.num_items == len(set(items))
            assert sorted(data.sequence_lengths.tolist()) == sorted(Counter(users).values())
        else:
            assert data.num_users == len(set(users)) or user_kind != "float"
            assert data.num_items == len(set(items)) or item_kind != "float"
        assert min(Counter(users).values()) >= 3
