"""The prepared-dataset directory: writing from Python lists, loading, splits, and their checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genrec.data import DataError, PreparedDatasetError, load_prepared, write_prepared

sequences_strategy = st.lists(st.lists(st.integers(0, 30), min_size=3, max_size=12), min_size=1, max_size=25)


@given(sequences=sequences_strategy, max_len=st.integers(0, 14), pad_side=st.sampled_from(["left", "right"]))
def test_splits_follow_leave_one_out(tmp_path_factory, sequences, max_len, pad_side):
    out = write_prepared(tmp_path_factory.mktemp("ds") / "d", sequences, item_ids=range(31))
    ds = load_prepared(out)
    assert ds.num_users == len(sequences) and ds.num_items == 31
    assert ds.num_interactions == sum(map(len, sequences))
    for u, s in enumerate(sequences):
        assert ds.sequence(u).tolist() == s
    expected = {
        "train": [(s[:-3], s[-3]) for s in sequences],
        "valid": [(s[:-2], s[-2]) for s in sequences],
        "test": [(s[:-1], s[-1]) for s in sequences],
    }
    for name, rows in expected.items():
        split = ds.split(name)
        assert split.users.tolist() == list(range(len(sequences)))
        assert split.targets.tolist() == [t for _, t in rows]
        assert [h.tolist() for h in split.history_list()] == [h for h, _ in rows]
        padded = split.histories(max_len=max_len, pad_side=pad_side, pad_value=-7)
        assert padded.shape == (len(rows), max_len)
        for got, (hist, _) in zip(padded.tolist(), rows, strict=True):
            kept = hist[len(hist) - min(len(hist), max_len) :]
            pad = [-7] * (max_len - len(kept))
            assert got == (kept + pad if pad_side == "right" else pad + kept)
    train = [x for s in sequences for x in s[:-2]]
    assert ds.train_item_counts().tolist() == np.bincount(train, minlength=31).tolist()
    assert ds.train_mask().sum() == len(train)
    assert ds.manifest["split"]["num_train_interactions"] == len(train)


def test_histories_default_width_and_row_selection(tmp_path):
    ds = load_prepared(write_prepared(tmp_path / "d", [[1, 2, 3, 4, 5], [6, 7, 8]]))
    test = ds.split("test")
    assert test.histories().tolist() == [[0, 1, 2, 3], [5, 6, -1, -1]]
    assert test.histories(rows=np.array([1]), max_len=1).tolist() == [[6]]
    assert test.histories(rows=slice(0, 1), max_len=2, pad_side="left").tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="pad_side"):
        test.histories(pad_side="middle")


def test_item_table_ids_text_and_users(tmp_path):
    out = write_prepared(
        tmp_path / "d",
        [["b", "a", "c"], ["c", "a", "d"]],
        user_ids=["u1", "u2"],
        timestamps=[[10, 20, 30], [5, 6, 7]],
        items=[
            {
                "item_id": "a",
                "title": "Salt &amp; Pepper ",
                "brand": "",
                "categories": [["X", "Y"], ["X", "Z"]],
            },
            {"item_id": "d", "title": None, "colour": "red"},
        ],
    )
    ds = load_prepared(out)
    table = ds.item_table().to_pylist()
    assert [r["item_id"] for r in table] == ["b", "a", "c", "d"]  # first appearance
    assert [r["item_idx"] for r in table] == [0, 1, 2, 3]
    assert table[1]["title"] == "Salt & Pepper" and table[1]["brand"] is None
    assert table[1]["categories"] == ["X", "Y", "Z"]
    assert table[3]["colour"] == "red" and table[0]["colour"] is None and table[0]["categories"] == []
    assert ds.item_text_columns == ["title", "categories", "colour"]
    assert ds.user_table().to_pydict() == {"user_idx": [0, 1], "user_id": ["u1", "u2"]}
    assert ds.interactions().column("timestamp").to_pylist() == [10, 20, 30, 5, 6, 7]
    assert ds.manifest["timestamp_unit"] == "given"
    assert len(ds.fingerprint) == 64


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"user 'u2' with 2"):
        write_prepared(tmp_path / "a", [[1, 2, 3], [1, 2]], user_ids=["u1", "u2"])
    with pytest.raises(DataError, match=r"field 'item_id' 'zz' is not an item"):
        write_prepared(tmp_path / "b", [[1, 2, 3]], items={"item_id": ["1", "zz"], "title": ["x", "y"]})
    with pytest.raises(DataError, match="not in item_ids"):
        write_prepared(tmp_path / "c", [[1, 2, 3]], item_ids=[1, 2])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_writer_replaces_only_when_asked_and_leaves_no_temporaries(tmp_path):
    out = write_prepared(tmp_path / "d", [[1, 2, 3]])
    with pytest.raises(DataError, match="--force"):
        write_prepared(out, [[4, 5, 6, 7]])
    write_prepared(out, [[4, 5, 6, 7]], overwrite=True)
    assert load_prepared(out).num_interactions == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prepared dataset"):
        write_prepared(tmp_path / "other", [[1, 2, 3]], overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_load_names_the_broken_file(tmp_path):
    with pytest.raises(PreparedDatasetError, match=r"manifest\.json is missing"):
        load_prepared(tmp_path)
    out = write_prepared(tmp_path / "d", [[1, 2, 3], [3, 2, 1]])
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(PreparedDatasetError, match="format_version"):
        load_prepared(out)
    (out / "manifest.json").write_text(json.dumps({**manifest, "num_interactions": 7}))
    with pytest.raises(PreparedDatasetError, match=r"items.npy has 6 entries"):
        load_prepared(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    np.save(out / "sequences" / "offsets.npy", np.array([0, 4, 6], dtype=np.int64))
    with pytest.raises(PreparedDatasetError, match=r"user 1 has 2 interactions"):
        load_prepared(out)
    np.save(out / "sequences" / "offsets.npy", np.array([0, 3, 6], dtype=np.int32))
    with pytest.raises(PreparedDatasetError, match="expected int64"):
        load_prepared(out)


def test_loading_and_evaluating_need_neither_polars_nor_faiss(tmp_path):
    out = write_prepared(tmp_path / "d", [[1, 2, 3, 4], [2, 3, 4]])
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["polars"] = None  # any import of polars (or faiss) now fails
        sys.modules["faiss"] = None
        import genrec.data, genrec.eval
        ds = genrec.data.load_prepared({str(out)!r})
        assert ds.split("test").targets.tolist() == [3, 3]
        assert "polars" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
