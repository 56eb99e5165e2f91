"""The p5 format: synthetic folders for the rules, and the real Amazon files for the exact counts."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import DataFormatError, load_prepared
from genrec.data.prepare import prepare_dataset
from tests.data.conftest import real_dataset


def make_p5(folder, lines, maps=None, meta=None, meta_name="item_meta.jsonl.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sequential_data.txt").write_text("".join(line + "\n" for line in lines))
    if maps is not None:
        with gzip.open(folder / "datamaps.json.gz", "wt") as f:
            json.dump(maps, f)
    if meta is not None:
        with gzip.open(folder / meta_name, "wt") as f:
            f.writelines(json.dumps(row) + "\n" for row in meta)
    return folder


MAPS = {
    "id2user": {"1": "alice", "2": "bob", "3": "carol"},
    "id2item": {"1": "A1", "2": "A2", "3": "A3", "4": "A4", "5": "A5"},
}


def test_p5_ids_order_text_and_manifest(tmp_path):
    source = make_p5(
        tmp_path / "src",
        ["2 4 1 5", "1 1 2 3 4", "3 5 3 1"],
        maps=MAPS,
        meta=[
            {
                "item_id": 1,
                "asin": "A1",
                "title": "Nail &amp; Polish",
                "brand": "OPI",
                "categories": [["B", "M"]],
            },
            {"item_id": 4, "asin": "A4", "title": None, "categories": [["B"]], "brand": None},
        ],
    )
    ds = load_prepared(prepare_dataset("p5", source, tmp_path / "out"))
    # Indexed in P5 id order: user 1 -> 0, item 1 -> 0, whatever the line order.
    assert ds.user_table().column("user_id").to_pylist() == ["alice", "bob", "carol"]
    assert ds.item_table().column("item_id").to_pylist() == ["A1", "A2", "A3", "A4", "A5"]
    assert [ds.sequence(u).tolist() for u in range(3)] == [[0, 1, 2, 3], [3, 0, 4], [4, 2, 0]]
    first = ds.item_table().to_pylist()[0]
    assert first["title"] == "Nail & Polish" and first["brand"] == "OPI" and first["categories"] == ["B", "M"]
    assert ds.interactions().column("timestamp").to_pylist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2]
    m = ds.manifest
    assert m["source_format"] == "p5" and m["timestamp_unit"] == "position"
    assert [s["path"].rsplit("/", 1)[1] for s in m["sources"]] == [
        "sequential_data.txt",
        "datamaps.json.gz",
        "item_meta.jsonl.gz",
    ]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in m["sources"])
    assert m["items_without_text"] == 3  # A2, A3, A5 have no row


def test_p5_weak_text_is_flagged(tmp_path):
    source = make_p5(
        tmp_path / "src",
        ["1 1 2 3"],
        meta=[{"item_id": i, "asin": str(i), "generated_keywords": f"kw {i}"} for i in (1, 2, 3)],
        meta_name="item_keywords_generated.jsonl.gz",
    )
    ds = load_prepared(prepare_dataset("p5", source, tmp_path / "out"))
    assert ds.item_text_columns == ["generated_keywords"]
    assert any("weak text" in note for note in ds.manifest["notes"])


@pytest.mark.parametrize(
    ("lines", "meta", "message"),
    [
        (["1 1 2 x"], None, r"sequential_data.txt, line 1, field 'item 3': 'x' is not a P5 integer id"),
        (["1 1 2 3", "1 3 2 1"], None, r"line 2, field 'user_id': user 1 already has a sequence on line 1"),
        (["1 1 2 9"], None, r"line 1, field 'item_id': item 9 is not in datamaps.json.gz"),
        (["1 1 2"], None, r"line 1, field 'user_id': user 'alice' has 2 interaction"),
        (["1 1 2 3"], [{"item_id": 7, "asin": "A7"}], r"item_meta.jsonl.gz, line 1, field 'item_id'"),
        (["1 1 2 3"], [{"item_id": 2, "asin": "A3"}], r"line 1, field 'asin': asin 'A3' disagrees"),
        (["1 1 2 3"], [{"item_id": 5, "asin": "A5"}], r"field 'item_id': item id 'A5' does not occur"),
    ],
)
def test_p5_bad_input_is_located(tmp_path, lines, meta, message):
    source = make_p5(tmp_path / "src", lines, maps=MAPS, meta=meta)
    with pytest.raises(DataFormatError, match=message):
        prepare_dataset("p5", source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_p5_skips_only_when_asked_and_counts(tmp_path):
    source = make_p5(tmp_path / "src", ["1 1 2 3", "2 1 x", "3 1 2"], maps=MAPS)
    with pytest.raises(DataFormatError, match="--skip malformed"):
        prepare_dataset("p5", source, tmp_path / "out")
    ds = load_prepared(prepare_dataset("p5", source, tmp_path / "out", skip=("malformed", "short_users")))
    assert ds.num_users == 1
    assert ds.manifest["skipped"] == {"malformed": 1, "short_users": 1}
    assert ds.manifest["options"]["skip"] == ["malformed", "short_users"]


def test_cli_prepare_reports_and_fails_cleanly(tmp_path):
    runner = CliRunner()
    source = make_p5(tmp_path / "src", ["1 1 2 3", "2 3 2 1"], maps=MAPS)
    result = runner.invoke(
        app, ["data", "prepare", "--format", "p5", "--source", str(source), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "2 users, 3 items, 6 interactions" in result.output
    again = runner.invoke(
        app, ["data", "prepare", "--format", "p5", "--source", str(source), "--out", str(tmp_path / "o")]
    )
    assert again.exit_code == 1 and "--force" in again.output
    bad = runner.invoke(
        app, ["data", "prepare", "--format", "nope", "--source", str(source), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and "unknown format" in bad.output


@pytest.mark.slow
def test_beauty_exact_counts(prepared_beauty):
    ds = load_prepared(prepared_beauty)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (22_363, 12_101, 198_502)
    assert ds.sequence_lengths.min() == 5 and ds.sequence_lengths.max() == 204
    assert ds.item_text_columns == ["title", "brand", "categories"]
    titles = ds.item_table(["title"]).column("title")
    assert titles.null_count == 7  # placeholders in the source
    assert ds.manifest["sources"][0]["sha256"].startswith("226cce9c")


@pytest.mark.slow
def test_sports_exact_counts(tmp_path):
    source = real_dataset("amazon2014/sports", "sequential_data.txt", "datamaps.json.gz")
    ds = load_prepared(prepare_dataset("p5", source, tmp_path / "sports"))
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (35_598, 18_357, 296_337)
    assert ds.item_text_columns == ["generated_keywords"]
