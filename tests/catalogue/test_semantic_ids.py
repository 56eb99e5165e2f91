"""New items' disambiguation tokens: the smallest token no item with the same codes uses, checked
against a brute-force reference; a prefix whose tokens are all taken is an error."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.catalogue import NewItemsError
from genrec.catalogue.semantic_ids import assign_new_ids


def reference(existing: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Token by token: the first t whose full ID no item (old or earlier new) holds."""
    taken = {tuple(r) for r in existing.tolist()}
    out = []
    for prefix in codes.tolist():
        t = 0
        while (*prefix, t) in taken:
            t += 1
        taken.add((*prefix, t))
        out.append([*prefix, t])
    return np.array(out, dtype=np.int64).reshape(len(codes), codes.shape[1] + 1)


@pytest.mark.parametrize("seed", range(20))
def test_tokens_match_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    L, V = int(rng.integers(1, 4)), int(rng.integers(2, 4))
    # Existing IDs: unique rows, with gaps in the token column (a removed item, a sparse group).
    pool = np.array(np.meshgrid(*[np.arange(V)] * L, np.arange(6), indexing="ij")).reshape(L + 1, -1).T
    existing = pool[rng.choice(len(pool), size=int(rng.integers(0, min(40, len(pool)))), replace=False)]
    codes = rng.integers(0, V, size=(int(rng.integers(1, 12)), L))
    got = assign_new_ids(existing, codes, [V] * L + [64])
    want = reference(existing, codes)
    np.testing.assert_array_equal(got, want)
    everything = np.concatenate([existing, got])
    assert len(np.unique(everything, axis=0)) == len(everything)


def test_the_smallest_free_token_is_taken_not_the_next_after_the_largest():
    existing = np.array([[1, 2, 0], [1, 2, 2], [0, 0, 0]])
    got = assign_new_ids(existing, np.array([[1, 2], [1, 2], [1, 2], [3, 3]]), [4, 4, 5])
    assert got.tolist() == [[1, 2, 1], [1, 2, 3], [1, 2, 4], [3, 3, 0]]


def test_a_prefix_with_every_token_taken_is_an_error_naming_the_item():
    existing = np.array([[1, 2, 0], [1, 2, 1]])
    with pytest.raises(NewItemsError, match=r"item_id 'X'.*codes \(1, 2\).*0\.\.1.*without retraining"):
        assign_new_ids(existing, np.array([[1, 2]]), [4, 4, 2], ["row 1 (item_id 'X')"])
    with pytest.raises(NewItemsError, match=r"new item 1: .*codes \(0, 0\)"):  # the second new item overflows
        assign_new_ids(existing, np.array([[0, 0], [0, 0]]), [4, 4, 1])


def test_codes_outside_the_models_vocabulary_are_refused():
    with pytest.raises(NewItemsError, match=r"code 4 at level 1 is outside the model's vocabulary \(4\)"):
        assign_new_ids(np.zeros((0, 3), np.int64), np.array([[0, 4]]), [4, 4, 2])


def test_a_full_prefix_sends_the_item_to_its_nearest_choice_with_room():
    existing = np.array([[1, 2, 0], [1, 2, 1], [1, 3, 0]])
    choices = np.array(
        [
            [[1, 2], [1, 3], [1, 0]],  # (1, 2) is full (tokens 0..1): the next choice (1, 3) has token 1
            [[1, 0], [1, 2], [1, 3]],  # its own prefix is free: it stays
            [[1, 3], [1, 2], [1, 0]],  # (1, 3) now full, (1, 2) full: (1, 0) after the item above took 0
        ]
    )
    got = assign_new_ids(existing, choices, [4, 4, 2])
    np.testing.assert_array_equal(got, [[1, 3, 1], [1, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(assign_new_ids(existing, choices[:, :1], [4, 4, 3])[:, :2], choices[:, 0])
    with pytest.raises(NewItemsError, match=r"codes \(1, 2\) .* nor any of its 1 nearest alternatives"):
        assign_new_ids(existing, choices[:1, :2][:, [0, 0]], [4, 4, 2], ["row 1"])
