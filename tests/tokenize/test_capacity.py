"""fit_to_capacity: overflowing cells move their farthest items to the nearest free codeword.

The reference below is a plain loop over Python ints. Points and codewords have small integer
coordinates, so float32 distances are exact (ties are frequent and follow the pinned rules).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.ops.reference import rq_encode_reference
from genrec.tokenize import CodebookOverflowError
from genrec.tokenize.capacity import fit_to_capacity


def squared(a, b) -> int:
    return sum((int(p) - int(q)) ** 2 for p, q in zip(a, b, strict=True))


def greedy_tail(r: list[int], books: np.ndarray, start: int) -> list[int]:
    """Greedy codes of the residual ``r`` from level ``start`` on (ties: the lower code)."""
    out = []
    for level in range(start, books.shape[0]):
        c = min(range(books.shape[1]), key=lambda j: (squared(r, books[level, j]), j))
        out.append(c)
        r = [p - int(q) for p, q in zip(r, books[level, c], strict=True)]
    return out


def reference_fit(codes: np.ndarray, z: np.ndarray, books: np.ndarray, max_token: int) -> np.ndarray:
    codes = codes.copy()
    n, levels = codes.shape
    k = books.shape[1]
    for level in range(levels):
        cap = max_token * k ** (levels - 1 - level)

        def residual(i, level=level):
            r = [int(v) for v in z[i]]
            for m in range(level):
                r = [p - int(q) for p, q in zip(r, books[m, codes[i, m]], strict=True)]
            return r

        cells: dict[tuple, list[int]] = {}
        for i in range(n):
            cells.setdefault(tuple(codes[i, : level + 1].tolist()), []).append(i)
        count = {cell: min(len(items), cap) for cell, items in cells.items()}
        movers = []  # (distance to the crowded codeword, item)
        for cell, items in cells.items():
            if len(items) > cap:
                far_first = sorted(
                    items, key=lambda i, c=cell[-1]: (-squared(residual(i), books[level, c]), i)
                )
                movers += [
                    (squared(residual(i), books[level, cell[-1]]), i) for i in far_first[: len(items) - cap]
                ]
        for _, i in sorted(movers, key=lambda t: (-t[0], t[1])):
            r = residual(i)
            parent = tuple(codes[i, :level].tolist())
            for c in sorted(range(k), key=lambda j: (squared(r, books[level, j]), j)):
                if count.get((*parent, c), 0) < cap:
                    break
            else:
                raise AssertionError("the reference found no room")
            count[(*parent, c)] = count.get((*parent, c), 0) + 1
            codes[i, level] = c
            rest = [p - int(q) for p, q in zip(r, books[level, c], strict=True)]
            codes[i, level + 1 :] = greedy_tail(rest, books, level + 1)
    return codes


def integer_case(rng: np.random.Generator, n: int, levels: int, k: int, dim: int = 2):
    z = rng.integers(-2, 3, size=(n, dim))
    books = rng.integers(-2, 3, size=(levels, k, dim))
    codes = rq_encode_reference(
        torch.tensor(z, dtype=torch.float32), torch.tensor(books, dtype=torch.float32)
    )
    return codes.numpy(), z, books


def fit(codes, z, books, max_token):
    return fit_to_capacity(
        codes, torch.tensor(z, dtype=torch.float32), torch.tensor(books, dtype=torch.float32), max_token
    )


@settings(max_examples=150)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(1, 4), (2, 4), (2, 3), (3, 2)]),
    max_token=st.integers(1, 4),
    fill=st.floats(0.05, 1.0),
)
def test_matches_the_reference_and_every_cell_fits(seed, shape, max_token, fill):
    levels, k = shape
    rng = np.random.default_rng(seed)
    space = max_token * k**levels
    n = max(1, int(fill * space))
    codes, z, books = integer_case(rng, n, levels, k)
    codes.flags.writeable = False  # the input is never written
    result = fit(codes, z, books, max_token)
    expected = reference_fit(codes, z, books, max_token)
    np.testing.assert_array_equal(result.codes, expected)
    assert result.codes.dtype == np.int64 and ((result.codes >= 0) & (result.codes < k)).all()
    _, sizes = np.unique(result.codes, axis=0, return_counts=True)
    assert sizes.max() <= max_token
    changed = np.flatnonzero((result.codes != codes).any(axis=1))
    np.testing.assert_array_equal(result.moved, changed)
    assert result.largest_cell_before == np.unique(codes, axis=0, return_counts=True)[1].max()
    assert sum(result.moved_per_level) >= len(changed)
    assert result.report()["moved_items"] == len(changed)


def test_nothing_moves_when_every_cell_fits():
    codes, z, books = integer_case(np.random.default_rng(3), 40, 2, 4)
    largest = np.unique(codes, axis=0, return_counts=True)[1].max()
    result = fit(codes, z, books, int(largest))
    np.testing.assert_array_equal(result.codes, codes)
    assert len(result.moved) == 0 and result.moved_per_level == [0, 0]


def test_farthest_move_first_ties_by_lower_index_nearest_free_codeword_ties_by_lower_code():
    books = np.array([[[0, 0], [0, 4], [0, -4], [9, 9]]])  # 1 level, 4 codes
    z = np.array(
        [
            [1, 0],  # 0: distance 1 from code 0, as items 1 and 3
            [0, 1],  # 1
            [0, 0],  # 2: on code 0
            [-1, 0],  # 3
            [0, 3],  # 4: on code 1 (distance 1): fills it
        ]
    )
    codes = rq_encode_reference(
        torch.tensor(z, dtype=torch.float32), torch.tensor(books, dtype=torch.float32)
    )
    assert codes[:, 0].tolist() == [0, 0, 0, 0, 1]
    result = fit(codes.numpy(), z, books, 2)
    # Code 0 holds 4, room for 2: two of the three items at distance 1 move, the lower indices
    # first (0, then 1); item 2 (on the codeword) and item 3 stay.
    # Item 0 at (1, 0) is as far from code 1 as from code 2 (a tie: the lower, code 1, which has
    # one place left); item 1 at (0, 1) prefers code 1 (distance 3), now full: code 2 (distance 5).
    assert result.codes[:, 0].tolist() == [1, 2, 0, 0, 1]
    assert result.moved.tolist() == [0, 1] and result.largest_cell_before == 4


def test_the_farthest_mover_chooses_first():
    books = np.array([[[0, 0], [4, 0], [-9, -9]]])
    z = np.array([[1, 0], [2, 1], [0, 0], [0, 0]])  # all on code 0 (item 1 by a tie); code 1 has one place
    z = np.concatenate([z, [[4, 0]]])  # item 4 on code 1
    codes = rq_encode_reference(
        torch.tensor(z, dtype=torch.float32), torch.tensor(books, dtype=torch.float32)
    )
    assert codes[:, 0].tolist() == [0, 0, 0, 0, 1]
    result = fit(codes.numpy(), z, books, 2)
    # Items 1 (farthest from code 0) and 0 move; item 1 chooses first and takes code 1's last
    # place, so item 0 (also nearer to code 1 than to code 2) gets code 2.
    assert result.codes[:, 0].tolist() == [2, 1, 0, 0, 1]


def test_a_full_prefix_moves_at_the_upper_level():
    # 2 levels of 2 codes, token below 1: each level-0 code holds 2 items; all 4 items sit on
    # code 0 at level 0, so 2 of them move to code 1 and are re-encoded at level 1.
    books = np.array([[[0, 0], [5, 0]], [[0, 0], [0, 1]]])
    z = np.array([[0, 0], [0, 1], [1, 0], [2, 1]])
    codes = rq_encode_reference(
        torch.tensor(z, dtype=torch.float32), torch.tensor(books, dtype=torch.float32)
    )
    result = fit(codes.numpy(), z, books, 1)
    np.testing.assert_array_equal(result.codes, reference_fit(codes.numpy(), z, books, 1))
    assert result.moved_per_level[0] == 2
    assert len(np.unique(result.codes, axis=0)) == 4


def test_a_full_space_fits_exactly_and_one_more_item_is_refused():
    rng = np.random.default_rng(0)
    codes, z, books = integer_case(rng, 2 * 3**2, 2, 3)
    result = fit(codes, z, books, 2)
    assert np.unique(result.codes, axis=0, return_counts=True)[1].tolist() == [2] * 9
    codes, z, books = integer_case(rng, 2 * 3**2 + 1, 2, 3)
    with pytest.raises(CodebookOverflowError, match=r"19 items, .* only 18 distinct semantic IDs"):
        fit(codes, z, books, 2)


def test_disagreeing_shapes_are_refused():
    codes, z, books = integer_case(np.random.default_rng(0), 10, 2, 3)
    with pytest.raises(ValueError, match="do not agree"):
        fit(codes[:, :1], z, books, 2)
    with pytest.raises(ValueError, match="do not agree"):
        fit(codes[:5], z, books, 2)


class PoisonedNumpy:
    """numpy whose ``empty`` buffers hold garbage: every element must be written."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float):
        out = np.empty(shape, dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else -7)
        return out


def test_every_output_element_is_written(monkeypatch):
    import genrec.tokenize.capacity as capacity

    monkeypatch.setattr(capacity, "np", PoisonedNumpy())
    for seed in range(20):
        codes, z, books = integer_case(np.random.default_rng(seed), 30, 2, 4)
        result = fit(codes, z, books, 2)
        np.testing.assert_array_equal(result.codes, reference_fit(codes, z, books, 2))
