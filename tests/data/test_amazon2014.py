"""The amazon2014 format: JSON review lines, Python-literal metadata, k-core, order, and the
cross-check that rebuilt raw files give exactly the P5 sequences."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from genrec.data import DataFormatError, load_prepared
from genrec.data.prepare import prepare_dataset
from tests.data.conftest import real_dataset


def review(user, item, t, rating=5.0):
    return json.dumps({"reviewerID": user, "asin": item, "unixReviewTime": t, "overall": rating})


def make_amazon(folder, reviews, meta=None, category="Toys"):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"reviews_{category}_5.json.gz", "wt") as f:
        f.writelines(line + "\n" for line in reviews)
    if meta is not None:
        with gzip.open(folder / f"meta_{category}.json.gz", "wt") as f:
            f.writelines(line + "\n" for line in meta)
    return folder


def test_order_ties_text_and_catalogue(tmp_path):
    reviews = [
        review("u1", "B", 200),
        review("u2", "A", 50),
        review("u1", "A", 100),
        review("u1", "C", 200),  # same time as B: the file order (B first) decides
        review("u2", "C", 60),
        review("u2", "B", 55),
    ]
    meta = [
        repr(
            {"asin": "A", "title": "Apple &amp; Pear", "brand": "Orchard", "categories": [["Food", "Fruit"]]}
        ),
        repr({"asin": "Z", "title": "never reviewed"}),
        repr(
            {
                "asin": "C",
                "title": "Cherry",
                "categories": [["Food"], ["Food", "Red"]],
                "description": "sweet",
            }
        ),
    ]
    source = make_amazon(tmp_path / "src", reviews, meta)
    ds = load_prepared(
        prepare_dataset(
            "amazon2014", source, tmp_path / "out", min_user_interactions=0, min_item_interactions=0
        )
    )
    users = ds.user_table().column("user_id").to_pylist()
    items = ds.item_table().column("item_id").to_pylist()
    assert users == ["u1", "u2"]  # first appearance in the file
    assert [[items[i] for i in ds.sequence(u)] for u in range(2)] == [["A", "B", "C"], ["A", "B", "C"]]
    assert ds.interactions().column("timestamp").to_pylist() == [100, 200, 200, 50, 55, 60]
    table = {r["item_id"]: r for r in ds.item_table().to_pylist()}
    assert table["A"]["title"] == "Apple & Pear" and table["A"]["categories"] == ["Food", "Fruit"]
    assert table["C"]["categories"] == ["Food", "Red"] and table["C"]["description"] == "sweet"
    assert table["B"]["title"] is None
    assert ds.manifest["items_without_text"] == 1
    assert ds.manifest["timestamp_unit"] == "s"
    assert ds.item_text_columns == ["title", "brand", "categories", "description"]


def test_iterative_k_core(tmp_path):
    # 3-core: item X has 3 users but u4 has only 2 items; dropping u4 leaves X with 2, which then
    # drops X, which leaves u3 with 2 items: three rounds until nothing changes.
    rows = [("u1", i) for i in "ABC"] + [("u2", i) for i in "ABC"] + [("u3", i) for i in "ABX"]
    rows += [("u4", "X"), ("u4", "Y"), ("u5", "X"), ("u5", "A"), ("u5", "B"), ("u5", "C")]
    reviews = [review(u, i, t) for t, (u, i) in enumerate(rows)]
    source = make_amazon(tmp_path / "src", reviews)
    ds = load_prepared(
        prepare_dataset(
            "amazon2014", source, tmp_path / "o", min_user_interactions=3, min_item_interactions=3
        )
    )
    assert sorted(ds.user_table().column("user_id").to_pylist()) == ["u1", "u2", "u5"]
    assert sorted(ds.item_table().column("item_id").to_pylist()) == ["A", "B", "C"]
    assert ds.manifest["filtered"]["k_core_users_removed"] == 2
    assert ds.manifest["filtered"]["k_core_items_removed"] == 2
    assert ds.manifest["filtered"]["k_core_rounds"] >= 3
    assert ds.manifest["options"]["min_user_interactions"] == 3


def test_min_rating_and_bad_lines(tmp_path):
    good = [review("u", i, t, rating=r) for t, (i, r) in enumerate([("A", 5), ("B", 1), ("C", 4), ("D", 5)])]
    source = make_amazon(tmp_path / "s1", good)
    ds = load_prepared(
        prepare_dataset(
            "amazon2014",
            source,
            tmp_path / "o1",
            min_item_interactions=0,
            min_user_interactions=0,
            min_rating=4,
        )
    )
    assert ds.num_interactions == 3 and ds.manifest["options"]["ratings_below_min"] == 1

    bad = [
        *good,
        '{"reviewerID": "u", "asin": "E"}',
        "not json at all",
        json.dumps({"reviewerID": "u", "asin": "F", "unixReviewTime": "soon"}),
    ]
    source = make_amazon(tmp_path / "s2", bad)
    with pytest.raises(
        DataFormatError, match=r"reviews_Toys_5.json.gz, line 5, field 'unixReviewTime': missing"
    ):
        prepare_dataset("amazon2014", source, tmp_path / "o2", min_item_interactions=0)
    ds = load_prepared(
        prepare_dataset(
            "amazon2014",
            source,
            tmp_path / "o2",
            min_user_interactions=3,
            min_item_interactions=0,
            skip=["malformed"],
        )
    )
    assert ds.num_interactions == 4 and ds.manifest["skipped"] == {"malformed": 3}


def test_metadata_is_parsed_as_literals_never_run(tmp_path):
    marker = tmp_path / "pwned"
    meta = [
        repr({"asin": "A", "title": "ok"}),
        f"{{'asin': 'B', 'title': __import__('pathlib').Path({str(marker)!r}).touch()}}",
    ]
    source = make_amazon(tmp_path / "src", [review("u", i, t) for t, i in enumerate("ABC")], meta)
    with pytest.raises(DataFormatError, match=r"meta_Toys.json.gz, line 2: not a Python dict literal"):
        prepare_dataset("amazon2014", source, tmp_path / "o", min_item_interactions=0)
    assert not marker.exists()


@pytest.mark.slow
def test_raw_reviews_rebuilt_from_p5_give_the_same_sequences(tmp_path, prepared_beauty):
    """Amazon-format review lines rebuilt from user_sequence_asin.txt.gz (each user's ASINs in order,
    increasing times, lines shuffled) prepared as amazon2014 (5-core) equal the P5 preparation."""
    folder = real_dataset("amazon2014/beauty", "user_sequence_asin.txt.gz", "item_meta.jsonl.gz")
    lines = []
    with gzip.open(folder / "user_sequence_asin.txt.gz", "rt") as f:
        for row in f:
            user, *asins = row.split()
            lines += [
                f'{{"reviewerID": "{user}", "asin": "{a}", "unixReviewTime": {1_300_000_000 + 86_400 * i}}}'
                for i, a in enumerate(asins)
            ]
    random.Random(0).shuffle(lines)
    meta = []
    with gzip.open(folder / "item_meta.jsonl.gz", "rt") as f:
        for row in f:
            item = json.loads(row)
            meta.append(
                repr(
                    {
                        "asin": item["asin"],
                        "title": item["title"],
                        "brand": item["brand"],
                        "categories": item["categories"],
                    }
                )
            )
    meta.append(repr({"asin": "NOT_REVIEWED", "title": "outside the 5-core"}))
    source = tmp_path / "raw"
    source.mkdir()
    with gzip.open(source / "reviews_Beauty_5.json.gz", "wt", compresslevel=1) as f:
        f.write("\n".join(lines) + "\n")
    with gzip.open(source / "meta_Beauty.json.gz", "wt", compresslevel=1) as f:
        f.write("\n".join(meta) + "\n")

    raw = load_prepared(prepare_dataset("amazon2014", source, tmp_path / "amazon"))
    p5 = load_prepared(prepared_beauty)
    assert (raw.num_users, raw.num_items, raw.num_interactions) == (22_363, 12_101, 198_502)

    def by_user(ds):
        users = ds.user_table().column("user_id").to_pylist()
        items = np.array(ds.item_table().column("item_id").to_pylist())
        return {users[u]: items[ds.sequence(u)].tolist() for u in range(ds.num_users)}

    assert by_user(raw) == by_user(p5)
    titles = lambda ds: dict(zip(*ds.item_table(["item_id", "title"]).to_pydict().values(), strict=True))  # noqa: E731
    assert titles(raw) == titles(p5)
    assert raw.manifest["filtered"]["k_core_interactions_removed"] == 0
    assert raw.manifest["filtered"]["catalogue_rows_without_interactions"] == 1
