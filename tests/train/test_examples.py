"""Training examples: every training item after a user's first is a target once per epoch, with the
right (capped) history, in an order that depends only on (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from genrec.train.examples import BatchMaker, build_examples, epoch_batches, shard


def ragged(draw_lengths):
    offsets = np.concatenate([[0], np.cumsum(draw_lengths)]).astype(np.int64)
    return offsets[:-1], offsets[1:]


@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=12), max_history=st.integers(1, 8))
def test_prefix_examples_match_brute_force(lengths, max_history):
    starts, ends = ragged(lengths)
    ex = build_examples(starts, ends, max_history, "prefix")
    got = sorted(zip(ex.users.tolist(), (ex.ends - ex.lengths).tolist(), ex.ends.tolist(), strict=True))
    want = []
    for u, (s, e) in enumerate(zip(starts, ends, strict=True)):
        for j in range(s + 1, e):  # target at flat position j
            want.append((u, max(s, j - max_history), j + 1))
    assert got == sorted(want)


@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12), max_history=st.integers(1, 8))
def test_windows_cover_each_target_once_with_capped_history(lengths, max_history):
    starts, ends = ragged(lengths)
    ex = build_examples(starts, ends, max_history, "window")
    seen = []
    for u, end, length in zip(ex.users, ex.ends, ex.lengths, strict=True):
        first = end - length
        assert starts[u] <= first and end <= ends[u]
        assert 2 <= length <= max_history + 1
        seen += [(int(u), int(j)) for j in range(first + 1, end)]  # targets of this window
    want = [(u, j) for u, (s, e) in enumerate(zip(starts, ends, strict=True)) for j in range(s + 1, e)]
    assert sorted(seen) == sorted(want)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    starts, ends = ragged([9, 4, 12, 7, 3, 15] * 5)
    ex = build_examples(starts, ends, 5, "prefix")
    a = epoch_batches(ex, 8, seed=1, epoch=3, length_grouping=True)
    b = epoch_batches(ex, 8, seed=1, epoch=3, length_grouping=True)
    c = epoch_batches(ex, 8, seed=1, epoch=4, length_grouping=True)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not all((x == y).all() for x, y in zip(a, c, strict=True))
    flat = np.concatenate(a)
    assert len(flat) == len(ex) // 8 * 8 and len(np.unique(flat)) == len(flat)  # no example twice


def test_length_grouping_reduces_padding():
    rng = np.random.default_rng(0)
    starts, ends = ragged(rng.integers(3, 40, size=300))
    ex = build_examples(starts, ends, 20, "prefix")
    width = lambda batches: np.mean([ex.lengths[b].max() for b in batches])  # noqa: E731
    grouped = width(epoch_batches(ex, 32, 0, 0, True))
    plain = width(epoch_batches(ex, 32, 0, 0, False))
    assert grouped < 0.8 * plain


def test_shards_partition_the_global_batch():
    batch = np.arange(12)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), batch)


@pytest.mark.parametrize("kind", ["prefix", "window"])
def test_batch_maker_gathers_semantic_ids(kind):
    starts, ends = ragged([7, 3, 11])
    flat = np.array([5, 1, 4, 0, 2, 3, 6, 6, 1, 2, 0, 4, 5, 3, 1, 2, 6, 0, 1, 5, 4], dtype=np.int64)
    codes = np.arange(7 * 3).reshape(7, 3)  # item i's ID: (3i, 3i+1, 3i+2)
    ex = build_examples(starts, ends, 4, kind)
    maker = BatchMaker(ex, flat, codes, torch.device("cpu"))
    idx = np.arange(len(ex))
    batch = maker(idx)
    for row, e in enumerate(idx):
        run = flat[ex.ends[e] - ex.lengths[e] : ex.ends[e]]
        if kind == "prefix":
            n = len(run) - 1
            assert batch["history_len"][row] == n
            assert torch.equal(batch["history"][row, :n], torch.as_tensor(codes[run[:-1]]))
            assert (batch["history"][row, n:] == 0).all()
            assert torch.equal(batch["target"][row], torch.as_tensor(codes[run[-1]]))
        else:
            n = len(run)
            assert batch["window_len"][row] == n
            assert torch.equal(batch["window"][row, :n], torch.as_tensor(codes[run]))
        assert batch["user_ids"][row] == ex.users[e]
    per_example = 1 if kind == "prefix" else ex.lengths - 1
    assert maker.target_tokens(idx, 3) == int(np.sum(np.broadcast_to(per_example, (len(ex),)))) * 3
