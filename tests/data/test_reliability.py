"""Bad raw data is a DataFormatError naming the file (and line and field), never a traceback; the
dataset fingerprint follows content and settings only; registered raw files are checked against
their pinned sha256; archives are extracted only when every member checks out."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile

import pytest

from genrec.data import load_prepared
from genrec.data.errors import DataError, DataFormatError, DownloadError
from genrec.data.prepare import prepare_dataset
from genrec.data.registry import KnownDataset, RemoteFile
from tests.data.test_amazon2014 import make_amazon, review
from tests.data.test_p5 import MAPS, make_p5

pl = pytest.importorskip("polars")

ROWS = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "c", 2), ("u2", "b", 3)]


def write_csv(path, rows=ROWS, header="user_id,item_id,timestamp"):
    path.write_text(header + "\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


def truncated(data: bytes) -> bytes:
    return gzip.compress(data)[:-12]


# ---- gzip ----
def test_truncated_or_fake_gzip_tables_name_the_file(tmp_path):
    body = b"user_id,item_id,timestamp\n" + b"".join(f"u{i % 3},i{i},{i}\n".encode() for i in range(300))
    for name, data in (("cut.csv.gz", truncated(body)), ("fake.csv.gz", b"plain text, not gzip\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataFormatError, match=rf"{name}: the gzip stream"):
            prepare_dataset("table", tmp_path / name, tmp_path / "out")


@pytest.mark.parametrize("which", ["datamaps.json.gz", "item_meta.jsonl.gz"])
def test_truncated_p5_gzip_files_name_the_file(tmp_path, which):
    meta = [{"item_id": i, "asin": f"A{i}", "title": f"t{i}" * 40} for i in range(1, 6)]
    folder = make_p5(tmp_path / "p5", ["1 1 2 3", "2 2 3 4", "3 3 4 5"], MAPS, meta)
    path = folder / which
    path.write_bytes(truncated(gzip.decompress(path.read_bytes())))
    options = {"items_file": folder / "item_meta.jsonl.gz"} if which == "item_meta.jsonl.gz" else {}
    with pytest.raises(DataFormatError, match=rf"{which}.*: the gzip stream is cut short"):
        prepare_dataset("p5", folder, tmp_path / "out", **options)


def test_truncated_amazon_reviews_name_the_file(tmp_path):
    reviews = [review(f"U{u}", f"I{i}", 100 * u + i) for u in range(30) for i in range(6)]
    folder = make_amazon(tmp_path / "amz", reviews)
    path = folder / "reviews_Toys_5.json.gz"
    path.write_bytes(truncated(gzip.decompress(path.read_bytes())))
    with pytest.raises(DataFormatError, match=r"reviews_Toys_5\.json\.gz.*the gzip stream is cut short"):
        prepare_dataset(
            "amazon2014", folder, tmp_path / "out", min_user_interactions=0, min_item_interactions=0
        )


# ---- id and time columns ----
@pytest.mark.parametrize(
    "column, values, message",
    [
        ("user_id", [1.0, 1.0, 1.0, 2.0, float("nan"), 2.0], r"row 5, field 'user_id': nan is not a finite"),
        ("item_id", [1.0, float("inf"), 2.0, 1.0, 2.0, 3.0], r"row 2, field 'item_id': inf is not a finite"),
        ("timestamp", [1.0, 2.0, float("nan"), 1.0, 2.0, 3.0], r"row 3, field 'timestamp'.*64-bit"),
        ("timestamp", [1.0, 2.0, 3.0, float("inf"), 2.0, 3.0], r"row 4, field 'timestamp'.*64-bit"),
        ("timestamp", [1.0, 2.0, 3.0, 1.0, 1e30, 3.0], r"row 5, field 'timestamp'.*64-bit"),
        ("user_id", [["a"], ["a"], ["a"], ["b"], ["b"], ["b"]], r"row 1, field 'user_id': ids of type List"),
        ("timestamp", [[1], [2], [3], [1], [2], [3]], r"row 1, field 'timestamp': timestamps of type List"),
    ],
)
def test_nan_inf_huge_and_nested_values_in_id_and_time_columns(tmp_path, column, values, message):
    data = {"user_id": ["u1"] * 3 + ["u2"] * 3, "item_id": ["a", "b", "c"] * 2, "timestamp": [1, 2, 3] * 2}
    data[column] = values
    path = tmp_path / "t.parquet"
    pl.DataFrame(data, strict=False).write_parquet(path)
    with pytest.raises(DataFormatError, match=message):
        prepare_dataset("table", path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_csv_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('user_id,item_id,timestamp\nu1,"an item\nwith two lines",1\nu1,b,2\nu1,c,3\nu2,a,oops\n')
    with pytest.raises(DataFormatError, match=r"t\.csv, line 6, field 'timestamp': 'oops'"):
        prepare_dataset("table", path, tmp_path / "out")


def test_an_unknown_encoding_is_named_before_reading(tmp_path):
    with pytest.raises(ValueError, match=r"unknown text encoding 'utf-99'"):
        prepare_dataset("table", write_csv(tmp_path / "t.csv"), tmp_path / "out", encoding="utf-99")


# ---- fingerprint ----
def test_the_fingerprint_follows_content_and_settings_only(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_csv(tmp_path / folder / "t.csv")
    first = prepare_dataset("table", tmp_path / "a" / "t.csv", tmp_path / "one", name="t")
    again = prepare_dataset("table", tmp_path / "b" / "t.csv", tmp_path / "two", name="t")
    manifest = json.loads((again / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"  # prepared at another time
    (again / "manifest.json").write_text(json.dumps(manifest))
    assert load_prepared(first).fingerprint == load_prepared(again).fingerprint
    write_csv(tmp_path / "a" / "t.csv", [*ROWS, ("u2", "d", 4)])
    changed = prepare_dataset("table", tmp_path / "a" / "t.csv", tmp_path / "three", name="t")
    assert load_prepared(changed).fingerprint != load_prepared(first).fingerprint
    other_settings = prepare_dataset(
        "table", tmp_path / "b" / "t.csv", tmp_path / "four", name="t", skip=["duplicates"]
    )
    assert load_prepared(other_settings).fingerprint != load_prepared(first).fingerprint


# ---- registered datasets ----
def test_a_registered_dataset_file_that_differs_from_its_pin_is_named(tmp_path, monkeypatch):
    lines = b"1 1 2 3\n2 2 3 4\n3 3 4 5\n"
    pinned = hashlib.sha256(lines).hexdigest()
    ds = KnownDataset(
        "test/p5",
        "p5",
        "test/p5",
        (RemoteFile("https://example.invalid/s.txt", "sequential_data.txt", pinned),),
        "",
        "",
        "",
    )
    monkeypatch.setitem(__import__("genrec.data.registry", fromlist=["DATASETS"]).DATASETS, ds.name, ds)
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "data" / "test" / "p5"
    folder.mkdir(parents=True)
    (folder / "sequential_data.txt").write_bytes(lines)
    prepare_dataset("p5", folder, tmp_path / "ok")  # the pinned bytes prepare
    (folder / "sequential_data.txt").write_bytes(lines.replace(b"4 5", b"5 4"))
    with pytest.raises(
        DataError, match=rf"sequential_data\.txt: sha256 \w+ differs from the {pinned}.*'test/p5'"
    ):
        prepare_dataset("p5", folder, tmp_path / "tampered")
    assert not (tmp_path / "tampered").exists()


def test_a_rejected_archive_leaves_nothing_extracted(tmp_path):
    from genrec.data.download import extract_zip

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml/u.item", b"good member, written first")
        zf.writestr("ml/u.data", b"tampered")
    archive = tmp_path / "ml.zip"
    archive.write_bytes(buffer.getvalue())
    remote = RemoteFile(
        "https://example.invalid/ml.zip",
        "ml.zip",
        extract=True,
        strip_prefix="ml/",
        member_sha256={"u.data": "0" * 64},
    )
    with pytest.raises(DownloadError, match=r"member u\.data has sha256 .*nothing was extracted"):
        extract_zip(archive, tmp_path, remote)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no u.item, no staging folder, archive deleted


@pytest.mark.parametrize(
    ("row", "field"),
    [
        (b'"com,ma","com,ma"\xff,1', "item"),  # quoted separators are text, not field breaks
        (b"a,b,\xff1", "time"),
        (b"\xffa,b,1", "user"),
    ],
)
def test_a_bad_byte_names_its_field_even_after_quoted_separators(tmp_path, row, field):
    path = tmp_path / "t.csv"
    path.write_bytes(b"user,item,time\n" + b"a,b,1\n" * 3 + row + b"\n")
    with pytest.raises(DataFormatError) as err:
        prepare_dataset("table", path, tmp_path / "out")
    assert err.value.line == 5 and err.value.field == field and err.value.reason == "encoding"
    assert not (tmp_path / "out").exists()
