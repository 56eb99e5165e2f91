"""genrec data hold-back: a dataset without some items, their table, and the users whose test target they are."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from genrec.data import ColdStart, PreparedDatasetError, load_prepared, write_cold_start, write_prepared
from genrec.data.errors import DataError
from genrec.data.hold_back import HELD_BACK_DIR, write_held_back


@pytest.fixture
def cold_source(tmp_path):
    rng = np.random.default_rng(5)
    sequences = [list(rng.integers(0, 80, size=int(rng.integers(3, 12)))) for _ in range(300)]
    ids = [f"it{i}" for i in range(80)]
    items = {
        "item_id": ids,
        "title": [f"item {i}" for i in range(80)],
        "brand": [f"b{i % 7}" for i in range(80)],
    }
    plain = write_prepared(
        tmp_path / "src", [[ids[i] for i in s] for s in sequences], item_ids=ids, items=items
    )
    return load_prepared(write_cold_start(plain, tmp_path / "cold", fraction=0.25, seed=2))


def _id_sequences(dataset) -> dict[str, list[str]]:
    ids = dataset.item_table(["item_id"]).column("item_id").to_pylist()
    users = dataset.user_table().column("user_id").to_pylist()
    return {users[u]: [ids[i] for i in dataset.sequence(u)] for u in range(dataset.num_users)}


def test_held_back_items_leave_the_dataset_and_nothing_else_changes(cold_source, tmp_path):
    out = load_prepared(write_held_back(cold_source, tmp_path / "held", count=5, seed=1))
    info = json.loads((out.path / HELD_BACK_DIR / "held_back.json").read_text())
    held = set(info["item_ids"])
    src_ids = cold_source.item_table(["item_id"]).column("item_id").to_pylist()
    cold_ids = {src_ids[i] for i in cold_source.cold_items()}
    assert len(held) == 5 and held <= cold_ids  # drawn from the cold items
    # The item table: the source's rows without the held-back ones, in order, re-indexed.
    out_ids = out.item_table(["item_id"]).column("item_id").to_pylist()
    assert out_ids == [i for i in src_ids if i not in held]
    assert out.item_table(["item_idx"]).column("item_idx").to_pylist() == list(range(len(out_ids)))
    # Each user's sequence: the source's without the held-back items; users left with < 3 dropped.
    source_seqs, out_seqs = _id_sequences(cold_source), _id_sequences(out)
    expected = {u: [i for i in s if i not in held] for u, s in source_seqs.items()}
    expected = {u: s for u, s in expected.items() if len(s) >= 3}
    assert out_seqs == expected
    assert out.manifest["held_back"]["users_dropped"] == len(source_seqs) - len(expected)
    # Still the cold-start protocol, with the other cold items (by id) and none in training.
    assert isinstance(out._scheme, ColdStart)
    assert {out_ids[i] for i in out.cold_items()} == cold_ids - held
    assert out.train_item_counts()[out.cold_items()].sum() == 0


def test_the_held_back_table_and_evaluation_users(cold_source, tmp_path):
    out = write_held_back(cold_source, tmp_path / "held", count=6, seed=4)
    folder = out / HELD_BACK_DIR
    held = json.loads((folder / "held_back.json").read_text())["item_ids"]
    table = pq.read_table(folder / "items.parquet")
    assert "item_idx" not in table.column_names and table.column("item_id").to_pylist() == held
    src_items = cold_source.item_table()
    rows = {r["item_id"]: r for r in src_items.to_pylist()}
    assert [{**rows[i], "item_idx": None} for i in held] == [
        {**r, "item_idx": None} for r in table.to_pylist()
    ]
    # The evaluation dataset: exactly the source's users whose test target is held back, whole
    # sequences, the source's item table and cold items.
    evaluation = load_prepared(folder / "eval")
    assert evaluation.item_table().equals(src_items)
    assert np.array_equal(evaluation.cold_items(), cold_source.cold_items())
    src_ids = src_items.column("item_id").to_pylist()
    test = cold_source.split("test")
    users = cold_source.user_table().column("user_id").to_pylist()
    want = {
        users[u]: [src_ids[i] for i in cold_source.sequence(u)]
        for u in test.users
        if src_ids[test.targets[u]] in held
    }
    assert want and _id_sequences(evaluation) == want


def test_seeded_and_refusing_bad_requests(cold_source, tmp_path):
    a = json.loads(
        (
            write_held_back(cold_source, tmp_path / "a", count=4, seed=3) / HELD_BACK_DIR / "held_back.json"
        ).read_text()
    )
    b = json.loads(
        (
            write_held_back(cold_source, tmp_path / "b", count=4, seed=3) / HELD_BACK_DIR / "held_back.json"
        ).read_text()
    )
    c = json.loads(
        (
            write_held_back(cold_source, tmp_path / "c", count=4, seed=9) / HELD_BACK_DIR / "held_back.json"
        ).read_text()
    )
    assert a["item_ids"] == b["item_ids"] != c["item_ids"]
    with pytest.raises(DataError, match="cannot hold back 20 of its 20 cold items"):
        write_held_back(cold_source, tmp_path / "d", count=20)
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="another folder"):
        write_held_back(cold_source, cold_source.path, count=2)
    before = sorted(p.name for p in (tmp_path / "a").iterdir())
    with pytest.raises(DataError, match="already holds a prepared dataset"):
        write_held_back(cold_source, tmp_path / "a", count=2, seed=0)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == before
    assert json.loads((tmp_path / "a" / HELD_BACK_DIR / "held_back.json").read_text()) == a


def test_explicit_cold_items_are_checked_when_loaded(cold_source, tmp_path):
    out = write_held_back(cold_source, tmp_path / "held", count=3)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    listed = manifest["split"]["cold_items"]
    assert listed == load_prepared(out).cold_items().tolist()
    for bad, message in (
        ([*listed[1:], listed[0] + 1 if listed[0] + 1 not in listed else listed[-1] + 1], "does not match"),
        ([*listed, listed[0]], "twice"),
        ([*listed[:-1], 10_000], "item indices in 0"),
        ("1,2", "list of item indices"),
    ):
        manifest["split"]["cold_items"] = bad
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(PreparedDatasetError, match=message):
            load_prepared(out)
