"""tokenize() with cells fuller than the disambiguation token: moved items take the first free
choice of ``Tokenizer.encode_choices``; without overflow the IDs are today's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.tokenize import disambiguate, load_semantic_ids, load_tokenizer, tokenize, write_tokenizer
from tests.tokenize.test_tokenize import small_config


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_without_overflow_the_ids_are_the_codes_disambiguated_as_before(method):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    popularity = rng.integers(0, 5, size=400)
    config = small_config(method, codebook_size=32, epochs=20)
    config.disambiguation = "popularity"
    result = tokenize(x, config, popularity)
    assert result.metrics["overflow"]["moved_items"] == 0
    assert result.metrics["overflow"]["largest_cell_before"] <= 32
    # The code path before capacity fitting: the tokenizer's codes, disambiguated by popularity.
    np.testing.assert_array_equal(result.semantic_ids, disambiguate(result.codes, 32, popularity))
    np.testing.assert_array_equal(result.codes, result.tokenizer.encode(x))


def crowded_items(seed: int) -> np.ndarray:
    """8 groups of 12 copies and 16 other items: 12 items per cell where the token numbers 8."""
    rng = np.random.default_rng(seed)
    copies = np.repeat(rng.normal(size=(8, 16)) * 5, 12, axis=0)
    return np.concatenate([copies, rng.normal(size=(16, 16)) * 5]).astype(np.float32)[rng.permutation(112)]


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_overflow_moves_to_the_first_choice_with_room(method, tmp_path):
    x = crowded_items(0)
    popularity = np.arange(112) % 7
    config = small_config(method, codebook_size=8, epochs=3)
    config.disambiguation = "popularity"
    result = tokenize(x, config, popularity)
    ids, codes = result.semantic_ids, result.codes
    report = result.metrics["overflow"]
    _, sizes = np.unique(codes, axis=0, return_counts=True)
    assert report["largest_cell_before"] == sizes.max() == result.metrics["collisions"]["largest_collision_group"]
    assert sizes.max() > 8 and report["cell_capacity"] == 8
    moved = np.flatnonzero((ids[:, :2] != codes).any(axis=1))
    assert report["moved_items"] == len(moved) > 0
    assert len(np.unique(ids, axis=0)) == 112 and ids[:, -1].max() < 8
    np.testing.assert_array_equal(ids, disambiguate(ids[:, :2], 8, popularity))  # ranked in the new cells

    # Consistent with add-items: each item's ID is the first of its choices whose cell is full at
    # the end (cells only fill up, so every choice before it was full at its turn).
    cells: dict[tuple, int] = {}
    for row in ids[:, :2].tolist():
        cells[tuple(row)] = cells.get(tuple(row), 0) + 1
    choices = result.tokenizer.encode_choices(x, 8)
    for i in range(112):
        row = [tuple(c) for c in choices[i].tolist()]
        if tuple(ids[i, :1]) != tuple(codes[i, :1]):  # moved at level 0: not this rule
            continue
        at = row.index(tuple(ids[i, :2]))
        assert all(cells.get(c, 0) == 8 for c in row[:at]), i
        assert at == 0 or i in moved

    write_tokenizer(tmp_path, result)
    np.testing.assert_array_equal(load_semantic_ids(tmp_path), ids)
    np.testing.assert_array_equal(load_tokenizer(tmp_path).encode_choices(x, 8), choices)
    saved = json.loads((tmp_path / "metrics.json").read_text())["overflow"]
    assert saved["moved_items"] == len(moved) and saved["largest_cell_before"] == sizes.max()
    assert saved["reconstruction"]["mse"] >= result.metrics["reconstruction"]["mse"]
