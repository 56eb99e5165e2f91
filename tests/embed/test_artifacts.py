"""Embedding artifacts: checks with clear errors, atomic writes, and reading them back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.embed import EmbeddingError, check_embeddings, load_embeddings, write_embeddings
from genrec.embed.artifacts import item_ids_sha256
from genrec.files import array_sha256, atomic_path


def test_check_embeddings_accepts_and_converts():
    out = check_embeddings(np.ones((3, 2), dtype=np.float64), num_items=3, dimension=2)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("array", "kwargs", "message"),
    [
        (np.ones(4, dtype=np.float32), {}, r"must be 2-D \[num_items, dimension\], got shape \[4\]"),
        (np.ones((2, 2, 2), dtype=np.float32), {}, "must be 2-D"),
        (np.ones((4, 3), dtype=np.float32), {"dimension": 5}, "dimension 3, expected 5"),
        (np.ones((4, 3), dtype=np.float32), {"num_items": 6}, "4 rows of embeddings for 6 items"),
        (np.ones((4, 0), dtype=np.float32), {}, "dimension 0"),
        (np.array([["a"]]), {}, "floating point"),
    ],
)
def test_check_embeddings_errors(array, kwargs, message):
    with pytest.raises(EmbeddingError, match=message):
        check_embeddings(array, source="EMB/embeddings.npy", **kwargs)


def test_nan_and_inf_rows_are_listed():
    x = np.zeros((12, 2), dtype=np.float32)
    x[[1, 4, 5, 6, 7, 8, 9, 10, 11], 0] = np.nan
    x[2, 1] = -np.inf
    with pytest.raises(
        EmbeddingError, match=r"EMB: 10 item\(s\) .* \(items 1, 2, 4, 5, 6, 7, 8, 9, \.\.\.\)"
    ):
        check_embeddings(x, source="EMB")


def test_write_then_load_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    write_embeddings(
        tmp_path / "emb", x, {"encoder": "test", "item_ids_sha256": item_ids_sha256(list("abcde"))}
    )
    loaded, meta = load_embeddings(
        tmp_path / "emb", num_items=5, item_ids_hash=item_ids_sha256(list("abcde"))
    )
    np.testing.assert_array_equal(loaded, x)
    assert meta["num_items"] == 5 and meta["dimension"] == 3 and meta["embeddings_sha256"] == array_sha256(x)
    loaded_file, meta_file = load_embeddings(tmp_path / "emb" / "embeddings.npy")
    np.testing.assert_array_equal(loaded_file, x)
    assert meta_file == {}
    assert not [p for p in (tmp_path / "emb").iterdir() if p.name.startswith(".")]  # no temp files left


def test_load_rejects_mismatches(tmp_path):
    x = np.ones((5, 3), dtype=np.float32)
    write_embeddings(tmp_path, x, {"item_ids_sha256": item_ids_sha256(list("abcde"))})
    with pytest.raises(EmbeddingError, match="5 rows of embeddings for 7 items"):
        load_embeddings(tmp_path, num_items=7)
    with pytest.raises(EmbeddingError, match="computed for a dataset whose items differ"):
        load_embeddings(tmp_path, item_ids_hash=item_ids_sha256(list("edcba")))
    meta = json.loads((tmp_path / "embed.json").read_text())
    (tmp_path / "embed.json").write_text(json.dumps({**meta, "dimension": 4}))
    with pytest.raises(EmbeddingError, match="dimension 3, expected 4"):
        load_embeddings(tmp_path)
    with pytest.raises(EmbeddingError, match="no such file"):
        load_embeddings(tmp_path / "missing.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EmbeddingError, match="not a plain numpy array"):
        load_embeddings(tmp_path / "obj.npy")


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
