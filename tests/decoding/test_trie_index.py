"""TrieIndex: layout, lookups, dense levels, persistence beside the tokenizer's artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrec.decoding import TRIE_FILE, TrieIndex
from tests.decoding.helpers import random_codes


def test_layout_lookup_and_reconstruction():
    codes = random_codes(500, [8, 6, 5, 3], seed=0)
    index = TrieIndex.from_codes(codes)
    assert index.levels == 4 and index.num_items == 500
    assert index.level_sizes == tuple((codes.amax(0) + 1).tolist())
    nodes = index.nodes_per_level
    assert nodes[0] == 1 and nodes[-1] == 500
    for d in range(1, 5):
        assert nodes[d] == torch.unique(codes[:, :d], dim=0).shape[0]
    assert torch.equal(index.codes(), codes)
    assert torch.equal(index.lookup(codes), torch.arange(500))
    # IDs of no item, and tokens outside the vocabulary, map to -1.
    absent = torch.tensor(
        [[int(codes[0, 0]), int(codes[0, 1]), int(codes[0, 2]), 3], [99, 0, 0, 0], [-1, 0, 0, 0]]
    )
    assert index.lookup(absent).tolist() == [-1, -1, -1]
    items = torch.tensor([7, 3, 499])
    assert torch.equal(index.items_of_leaves(index.leaves_of_items(items)), items)
    assert index.items_of_leaves(torch.tensor([-1, 0])).tolist()[0] == -1


def test_ancestors_and_leaf_ranges_partition_the_leaves():
    codes = random_codes(300, [5, 7, 10], seed=1)
    index = TrieIndex.from_codes(codes)
    leaves = torch.arange(300)
    for d in range(0, 4):
        start = index.leaf_start(d)
        assert int(start[0]) == 0 and int(start[-1]) == 300 and bool((start.diff() > 0).all())
        anc = index.ancestors(leaves, d)
        assert bool(((start[anc] <= leaves) & (leaves < start[anc + 1])).all())
        # Leaves under one depth-d node share their first d tokens.
        prefix = index.codes(index.items_of_leaves(leaves))[:, :d]
        for node in torch.unique(anc)[:20]:
            rows = prefix[anc == node]
            assert bool((rows == rows[0]).all())


def test_dense_levels_follow_size_and_fill():
    codes = random_codes(2000, [4, 16, 64, 3], seed=2)
    index = TrieIndex.from_codes(codes, dense_max_entries=4096, dense_min_fill=0.5)
    # depth 0: 1 x 4 (full); depth 1: 4 x 16 (full); depth 2: 64 x 64 entries, sparse; depth 3: too large.
    assert index.dense_levels[:2] == (True, True)
    assert index.dense_levels[3] is False
    for t, table in enumerate(index.dense):
        if table is None:
            continue
        rp, ct = index.row_ptr[t].long(), index.child_tokens[t].long()
        for s in range(table.shape[0]):
            row = table[s]
            kids = torch.arange(int(rp[s]), int(rp[s + 1]))
            assert torch.equal(row[ct[kids]], kids.int())
            assert int((row >= 0).sum()) == kids.numel()
    assert TrieIndex.from_codes(codes, dense_max_entries=0).dense_levels == (False,) * 4


def test_level_sizes_can_exceed_the_codes():
    codes = torch.tensor([[0, 1], [2, 0]])
    index = TrieIndex.from_codes(codes, level_sizes=[4, 8])
    assert index.level_sizes == (4, 8)
    assert index.level(0).dense is not None and index.level(0).dense.shape == (1, 4)
    with pytest.raises(ValueError, match="outside"):
        TrieIndex.from_codes(codes, level_sizes=[2, 8])


def test_numpy_codes_and_reference_builder_agree():
    codes = random_codes(200, [6, 6, 6], seed=3).numpy()
    a = TrieIndex.from_codes(codes)
    b = TrieIndex.from_codes(torch.from_numpy(codes), backend="reference")
    assert torch.equal(a.leaf_items, b.leaf_items)
    assert all(torch.equal(x, y) for x, y in zip(a.child_tokens, b.child_tokens, strict=True))
    assert a.codes_sha256 == b.codes_sha256


def test_save_load_roundtrip(tmp_path):
    codes = random_codes(400, [10, 10, 4], seed=4)
    index = TrieIndex.from_codes(codes, level_sizes=[10, 12, 4])
    path = index.save(tmp_path / TRIE_FILE)
    assert not list(tmp_path.glob(".*")), "a temporary file was left behind"
    loaded = TrieIndex.load(path)
    assert loaded.level_sizes == index.level_sizes and loaded.codes_sha256 == index.codes_sha256
    assert loaded.dense_levels == index.dense_levels
    for a, b in zip(
        [loaded.leaf_items, *loaded.row_ptr, *loaded.child_tokens],
        [index.leaf_items, *index.row_ptr, *index.child_tokens],
        strict=True,
    ):
        assert torch.equal(a, b)
    for a, b in zip(loaded.dense, index.dense, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert torch.equal(loaded.lookup(codes), torch.arange(400))


def test_load_rejects_foreign_or_damaged_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a genrec trie"):
        TrieIndex.load(tmp_path / "other.safetensors")
    index = TrieIndex.from_codes(random_codes(20, [3, 3, 3], seed=5))
    meta = index.metadata()
    tensors = {"leaf_items": index.leaf_items, "row_ptr.0": index.row_ptr[0]}
    save_file(tensors, tmp_path / "partial.safetensors", metadata={"genrec_trie": json.dumps(meta)})
    with pytest.raises(ValueError, match="lacks the array"):
        TrieIndex.load(tmp_path / "partial.safetensors")
    save_file(
        tensors,
        tmp_path / "future.safetensors",
        metadata={"genrec_trie": json.dumps({**meta, "format_version": 99})},
    )
    with pytest.raises(ValueError, match="trie format 99"):
        TrieIndex.load(tmp_path / "future.safetensors")
    with pytest.raises(FileNotFoundError):
        TrieIndex.load(tmp_path / "missing.safetensors")


def test_for_tokenizer_builds_once_then_reuses_and_rebuilds_on_change(tmp_path):
    codes = random_codes(150, [8, 8, 3], seed=6).numpy()
    np.save(tmp_path / "semantic_ids.npy", codes)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"level_sizes": [8, 9, 3]}))
    index = TrieIndex.for_tokenizer(tmp_path)
    assert (tmp_path / TRIE_FILE).exists() and index.level_sizes == (8, 9, 3)
    stamp = (tmp_path / TRIE_FILE).stat().st_mtime_ns
    again = TrieIndex.for_tokenizer(tmp_path)
    assert (tmp_path / TRIE_FILE).stat().st_mtime_ns == stamp and again.codes_sha256 == index.codes_sha256
    changed = random_codes(120, [8, 8, 3], seed=7).numpy()
    np.save(tmp_path / "semantic_ids.npy", changed)
    rebuilt = TrieIndex.for_tokenizer(tmp_path)
    assert rebuilt.num_items == 120 and torch.equal(rebuilt.codes(), torch.from_numpy(changed))
    with pytest.raises(FileNotFoundError, match="genrec tokenize"):
        TrieIndex.for_tokenizer(tmp_path / "nowhere")


@pytest.mark.cuda
def test_index_moves_to_cuda_once():
    codes = random_codes(1000, [16, 16, 8], seed=8)
    index = TrieIndex.from_codes(codes)
    gpu = index.to("cuda")
    assert gpu.device.type == "cuda" and all(t.is_cuda for t in gpu.row_ptr + gpu.child_tokens)
    assert gpu.to("cuda") is gpu
    assert torch.equal(gpu.lookup(codes.cuda()).cpu(), torch.arange(1000))
    assert torch.equal(gpu.codes().cpu(), codes)
