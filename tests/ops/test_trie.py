"""build_trie: the C++ builder against the PyTorch reference, and the trie's invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genrec.ops as ops
from genrec.ops import Backend, BackendUnavailableError
from tests.ops.helpers import backends_under_test

BUILDERS = [b for b in backends_under_test("build_trie", "cpu") if b is Backend.CPP]


def draw_codes(data, *, max_items=300, max_levels=5, huge=False):
    levels = data.draw(st.integers(1, max_levels), label="levels")
    if huge:  # IDs that do not fit in 64 bits: the comparison-sort path
        sizes = [data.draw(st.integers(2**20, 2**31 - 1)) for _ in range(levels)]
    else:
        sizes = [data.draw(st.integers(1, 40), label=f"V{t}") for t in range(levels)]
    space = 1
    for v in sizes:
        space *= v
    n = data.draw(st.integers(0, min(max_items, space)), label="N")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    g = torch.Generator().manual_seed(seed)
    # Draw from a small alphabet per level so prefixes are shared a lot, then drop duplicates.
    alphabet = [torch.randint(0, v, (min(v, 4),), generator=g) for v in sizes]
    rows = torch.stack([a[torch.randint(0, len(a), (4 * n + 8,), generator=g)] for a in alphabet], dim=1)
    rows = torch.unique(rows, dim=0)
    rows = rows[torch.randperm(rows.shape[0], generator=g)[:n]]
    return rows, sizes


def check_invariants(codes: torch.Tensor, sizes: list[int], arrays: list[torch.Tensor]) -> None:
    n, L = codes.shape
    leaf_items, row_ptr, child_tokens = arrays[0], arrays[1::2], arrays[2::2]
    assert all(a.dtype == torch.int32 for a in arrays)
    assert sorted(leaf_items.tolist()) == list(range(n))
    nodes = 1
    for d in range(L):
        rp, ct = row_ptr[d].long(), child_tokens[d].long()
        assert rp.numel() == nodes + 1 and int(rp[0]) == 0 and int(rp[-1]) == ct.numel()
        assert bool((rp.diff() >= 0).all())
        assert bool(((ct >= 0) & (ct < sizes[d])).all())
        for s in range(nodes):  # strictly ascending tokens within each node's run
            run = ct[rp[s] : rp[s + 1]]
            assert bool((run.diff() > 0).all())
        nodes = ct.numel()
    assert nodes == n
    # Walking the tree from the root along each item's ID ends at that item's leaf.
    for i in range(n):
        s = 0
        for d in range(L):
            run = child_tokens[d][row_ptr[d][s] : row_ptr[d][s + 1]].tolist()
            s = int(row_ptr[d][s]) + run.index(int(codes[i, d]))
        assert int(leaf_items[s]) == i


@given(data=st.data())
@settings(max_examples=60)
def test_reference_builds_a_valid_trie(data):
    codes, sizes = draw_codes(data, max_items=120)
    check_invariants(codes, sizes, ops.build_trie(codes, sizes, backend="reference"))


@pytest.mark.parametrize("backend", BUILDERS, ids=lambda b: b.value)
@given(data=st.data())
@settings(max_examples=120)
def test_cpp_builder_equals_reference(backend, data):
    codes, sizes = draw_codes(data)
    expected = ops.build_trie(codes, sizes, backend="reference")
    got = ops.build_trie(codes, sizes, backend=backend)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BUILDERS, ids=lambda b: b.value)
@given(data=st.data())
@settings(max_examples=30)
def test_cpp_builder_handles_ids_beyond_64_bits(backend, data):
    codes, sizes = draw_codes(data, max_items=80, max_levels=4, huge=True)
    if sum(max(0, (v - 1).bit_length()) for v in sizes) <= 64:
        sizes = [2**31 - 1] * len(sizes) + [2**31 - 1, 2**31 - 1, 2**31 - 1]
        codes = torch.cat([codes, torch.zeros(codes.shape[0], 3, dtype=torch.long)], dim=1)
    expected = ops.build_trie(codes, sizes, backend="reference")
    for a, b in zip(ops.build_trie(codes, sizes, backend=backend), expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *BUILDERS], ids=lambda b: b.value)
def test_small_trie_by_hand(backend):
    codes = torch.tensor([[1, 2], [0, 1], [1, 0], [0, 0]])
    leaf_items, rp0, ct0, rp1, ct1 = ops.build_trie(codes, [2, 3], backend=backend)
    assert leaf_items.tolist() == [3, 1, 2, 0]  # sorted IDs: 00, 01, 10, 12
    assert rp0.tolist() == [0, 2] and ct0.tolist() == [0, 1]
    assert rp1.tolist() == [0, 2, 4] and ct1.tolist() == [0, 1, 0, 2]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *BUILDERS], ids=lambda b: b.value)
def test_empty_and_single_item_catalogues(backend):
    arrays = ops.build_trie(torch.zeros(0, 3, dtype=torch.long), [4, 4, 4], backend=backend)
    assert [a.tolist() for a in arrays] == [[], [0, 0], [], [0], [], [0], []]
    arrays = ops.build_trie(torch.tensor([[2, 0, 1]]), [4, 4, 4], backend=backend)
    assert [a.tolist() for a in arrays] == [[0], [0, 1], [2], [0, 1], [0], [0, 1], [1]]


@pytest.mark.parametrize("backend", [Backend.REFERENCE, *BUILDERS], ids=lambda b: b.value)
def test_duplicates_and_out_of_range_codes_are_refused(backend):
    codes = torch.tensor([[0, 1], [1, 1], [0, 2], [1, 1]])
    with pytest.raises(ValueError, match=r"unique, but items 1 and 3 share the ID \[1, 1\]"):
        ops.build_trie(codes, [2, 3], backend=backend)
    with pytest.raises(ValueError, match=r"item 2 has code 2 at level 1, outside \[0, 2\)"):
        ops.build_trie(torch.tensor([[0, 1], [1, 1], [0, 2]]), [2, 2], backend=backend)
    with pytest.raises(ValueError, match=r"code -1 at level 0"):
        ops.build_trie(torch.tensor([[0, 1], [-1, 1]]), [2, 2], backend=backend)


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="codes must be 2-D"):
        ops.build_trie(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="codes must hold integers"):
        ops.build_trie(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="2 code columns but level_sizes has 3 entries"):
        ops.build_trie(torch.zeros(1, 2, dtype=torch.long), [1, 1, 1])
    with pytest.raises(BackendUnavailableError, match="runs on the CPU only"):
        ops.build_trie(torch.zeros(1, 2, dtype=torch.long), backend="cuda")
    # default level sizes: max + 1 per column
    arrays = ops.build_trie(torch.tensor([[3, 0], [1, 5]]))
    assert arrays[2].tolist() == [1, 3]
