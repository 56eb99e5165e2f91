"""The table format (Parquet/CSV/TSV with named columns) and the bad-input errors of every format:
each names the file, line (or row) and field; skipping happens only when asked, and is counted."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import DataFormatError, load_prepared
from genrec.data.prepare import prepare_dataset

CSV = "user,item,when\nu1,a,10\nu1,b,20\nu1,c,20\nu2,c,5\nu2,a,7\nu2,b,6\n"
ITEMS = "item,title,brand,categories,year\na,Alpha,ACME,x|y,1999\nb,Beta,,,2001\nc,Gamma &amp; co,ACME,z,\n"
COLS = {"user_col": "user", "item_col": "item", "time_col": "when"}


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_named_columns_and_item_text(tmp_path):
    src = write(tmp_path / "log.csv", CSV)
    items = write(tmp_path / "items.csv", ITEMS)
    ds = load_prepared(prepare_dataset("table", src, tmp_path / "out", items_file=items, **COLS))
    ids = ds.item_table().column("item_id").to_pylist()
    assert ids == ["a", "b", "c"]
    # u1: a(10) b(20) c(20): the tie keeps file order; u2 sorted by time: c(5) b(6) a(7)
    assert [[ids[i] for i in ds.sequence(u)] for u in range(2)] == [["a", "b", "c"], ["c", "b", "a"]]
    rows = {r["item_id"]: r for r in ds.item_table().to_pylist()}
    assert rows["a"]["categories"] == ["x", "y"] and rows["b"]["categories"] == []
    assert rows["c"]["title"] == "Gamma & co" and rows["b"]["brand"] is None and rows["a"]["year"] == "1999"
    assert ds.manifest["options"]["columns"] == {"user": "user", "item": "item", "timestamp": "when"}
    assert ds.manifest["timestamp_unit"] == "given"


def test_parquet_with_datetimes_and_list_categories(tmp_path):
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    times = [t0 + dt.timedelta(days=d) for d in (2, 0, 1, 0, 1, 2)]
    table = pa.table({"user_id": [7, 7, 7, 8, 8, 8], "item_id": [1, 2, 3, 1, 2, 3], "timestamp": times})
    pq.write_table(table, tmp_path / "interactions.parquet")
    pq.write_table(pa.table({"item_id": [1, 3], "categories": [["p", "q"], []]}), tmp_path / "items.parquet")
    ds = load_prepared(
        prepare_dataset("table", tmp_path, tmp_path / "out", items_file=tmp_path / "items.parquet")
    )
    assert ds.user_table().column("user_id").to_pylist() == ["7", "8"]
    ids = ds.item_table().column("item_id").to_pylist()
    assert [ids[i] for i in ds.sequence(0)] == ["2", "3", "1"]
    assert ds.interactions().column("timestamp").to_pylist()[0] == int(t0.timestamp())
    assert ds.manifest["timestamp_unit"] == "s"
    assert ds.item_table().column("categories").to_pylist()[ids.index("1")] == ["p", "q"]


def test_iso_strings_and_tsv(tmp_path):
    src = write(
        tmp_path / "log.tsv",
        "user_id\titem_id\ttimestamp\nu\ta\t2024-03-01T10:00:00\nu\tb\t2024-02-01\nu\tc\t2024-01-01\n",
    )
    ds = load_prepared(prepare_dataset("table", src, tmp_path / "out"))
    ids = ds.item_table().column("item_id").to_pylist()
    assert [ids[i] for i in ds.sequence(0)] == ["c", "b", "a"] and ds.manifest["timestamp_unit"] == "s"


BAD_INPUT = [
    # (what, interactions csv, items csv or None, error pattern, skip reason or None, rows skipped)
    ("malformed line", CSV + "u3,a\n", None, r"log.csv, line 8, field 'when': empty value", "malformed", 1),
    (
        "bad timestamp",
        CSV + "u1,d,soon\n",
        None,
        r"log.csv, line 8, field 'when': 'soon' is not an integer",
        "malformed",
        1,
    ),
    (
        "missing column",
        CSV.replace("when", "time"),
        None,
        r"log.csv, field 'when': missing column 'when'; the columns are 'user', 'item', 'time'",
        None,
        0,
    ),
    (
        "unknown item id in item table",
        CSV,
        ITEMS + "zz,Ghost,,,\n",
        r"items.csv, line 5, field 'item_id': item id 'zz' does not occur",
        "unknown_items",
        1,
    ),
    (
        "user with fewer than 3",
        CSV + "u3,a,1\nu3,b,2\n",
        None,
        r"log.csv, line 8, field 'user_id': user 'u3' has 2 interaction",
        "short_users",
        1,
    ),
    (
        "duplicate row",
        CSV + "u1,b,20\n",
        None,
        r"log.csv, line 8: duplicate row: user 'u1', item 'b' at timestamp 20",
        "duplicates",
        1,
    ),
    (
        "duplicate item row",
        CSV,
        ITEMS + "a,Alpha again,,,\n",
        r"items.csv, line 5, field 'item_id': item id 'a' has more than one row",
        "duplicates",
        1,
    ),
]


@pytest.mark.parametrize(
    ("what", "csv", "items", "pattern", "reason", "count"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
def test_bad_input_is_named_and_skipped_only_when_asked(tmp_path, what, csv, items, pattern, reason, count):
    src = write(tmp_path / "log.csv", csv)
    items_file = write(tmp_path / "items.csv", items) if items else None
    with pytest.raises(DataFormatError, match=pattern):
        prepare_dataset("table", src, tmp_path / "out", items_file=items_file, **COLS)
    assert not (tmp_path / "out").exists()
    if reason is None:
        return
    ds = load_prepared(
        prepare_dataset("table", src, tmp_path / "out", items_file=items_file, skip=[reason], **COLS)
    )
    assert ds.manifest["skipped"] == {reason: count}
    assert (ds.num_users, ds.num_interactions) == (2, 6)


def test_wrong_encoding_is_named_and_can_be_declared(tmp_path):
    src = write(tmp_path / "log.csv", CSV.replace("u2", "ü2"), encoding="latin-1")
    with pytest.raises(
        DataFormatError, match=r"log.csv, line 5, field 'user': byte \d+ \(b'\\xfc'\) is not valid utf-8 \(pass --encoding"
    ):
        prepare_dataset("table", src, tmp_path / "out", **COLS)
    ds = load_prepared(prepare_dataset("table", src, tmp_path / "out", encoding="latin-1", **COLS))
    assert ds.user_table().column("user_id").to_pylist() == ["u1", "ü2"]


def test_parquet_errors_count_rows(tmp_path):
    pq.write_table(
        pa.table({"user_id": ["u", "u", None], "item_id": ["a", "b", "c"], "timestamp": [1, 2, 3]}),
        tmp_path / "x.parquet",
    )
    with pytest.raises(DataFormatError, match=r"x.parquet, row 3, field 'user_id': empty value"):
        prepare_dataset("table", tmp_path / "x.parquet", tmp_path / "out")


def test_unknown_skip_reason_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown skip reason"):
        prepare_dataset(
            "table", write(tmp_path / "log.csv", CSV), tmp_path / "out", skip=["everything"], **COLS
        )


def test_cli_table_options(tmp_path):
    src = write(tmp_path / "log.csv", CSV + "u3,a,1\n")
    args = ["data", "prepare", "--format", "table", "--source", str(src), "--out", str(tmp_path / "o")]
    args += ["--user-col", "user", "--item-col", "item", "--time-col", "when"]
    failed = CliRunner().invoke(app, args)
    assert (
        failed.exit_code == 1
        and "user 'u3' has 1 interaction" in failed.output
        and "--skip short_users" in failed.output
    )
    result = CliRunner().invoke(app, [*args, "--skip", "short_users"])
    assert result.exit_code == 0, result.output
    assert "skipped (short_users): 1" in result.output
