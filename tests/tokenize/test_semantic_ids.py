"""Disambiguation: every ID unique, tokens numbered in item order, a clear overflow error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from genrec.tokenize import CodebookOverflowError, disambiguate
from genrec.tokenize.metrics import collision_stats, level_usage
from genrec.tokenize.semantic_ids import collision_groups, row_keys


def reference_disambiguate(codes: np.ndarray) -> np.ndarray:
    seen: dict[tuple, int] = {}
    token = []
    for row in codes.tolist():
        key = tuple(row)
        token.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return np.concatenate([codes, np.array(token, dtype=np.int64).reshape(-1, 1)], axis=1)


codes_strategy = st.integers(1, 3).flatmap(
    lambda levels: arrays(
        np.int64, st.tuples(st.integers(0, 200), st.just(levels)), elements=st.integers(0, 3)
    )
)


@given(codes=codes_strategy)
def test_disambiguate_matches_reference_and_is_unique(codes):
    ids = disambiguate(codes, max_token=256)
    assert ids.dtype == np.int64 and ids.shape == (codes.shape[0], codes.shape[1] + 1)
    np.testing.assert_array_equal(ids, reference_disambiguate(codes))
    assert len(np.unique(ids, axis=0)) == len(ids)


@given(codes=codes_strategy)
def test_collision_stats_match_counting(codes):
    stats = collision_stats(codes)
    counts: dict[tuple, int] = {}
    for row in codes.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    colliding = sum(c for c in counts.values() if c > 1)
    assert stats["colliding_items"] == colliding
    assert stats["collision_groups"] == sum(1 for c in counts.values() if c > 1)
    assert stats["largest_collision_group"] == max(counts.values(), default=0)
    assert stats["unique_codes"] == len(counts)
    assert stats["collision_rate"] == (colliding / len(codes) if len(codes) else 0.0)


def test_disambiguation_token_counts_in_item_order():
    codes = np.array([[5, 1], [2, 2], [5, 1], [5, 1], [2, 2], [0, 0]])
    assert disambiguate(codes, 4)[:, -1].tolist() == [0, 0, 1, 2, 1, 0]


def reference_by_priority(codes: np.ndarray, priority: np.ndarray) -> np.ndarray:
    token = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(codes.tolist()):
        # Items of the same tuple ranked before i: higher priority, or equal priority and lower index.
        for j, other in enumerate(codes.tolist()):
            if other == row and (priority[j] > priority[i] or (priority[j] == priority[i] and j < i)):
                token[i] += 1
    return np.concatenate([codes, token[:, None]], axis=1)


@given(codes=codes_strategy, data=st.data())
def test_disambiguate_by_priority_matches_reference(codes, data):
    priority = data.draw(arrays(np.int64, codes.shape[0], elements=st.integers(0, 3)))
    ids = disambiguate(codes, max_token=256, priority=priority)
    np.testing.assert_array_equal(ids, reference_by_priority(codes, priority))


def test_disambiguation_by_priority_ranks_popular_items_first_ties_by_index():
    codes = np.array([[5, 1], [2, 2], [5, 1], [5, 1], [2, 2]])
    popularity = np.array([3, 1, 9, 3, 1])
    assert disambiguate(codes, 4, popularity)[:, -1].tolist() == [1, 0, 0, 2, 1]
    with pytest.raises(ValueError, match="one value per item"):
        disambiguate(codes, 4, popularity[:3])


def test_overflow_names_the_group_and_the_fix():
    codes = np.array([[1, 2]] * 5 + [[0, 0]])
    assert disambiguate(codes, 5)[:, -1].max() == 4  # exactly fits
    with pytest.raises(CodebookOverflowError) as err:
        disambiguate(codes, 4)
    message = str(err.value)
    assert "5 items share the codes (1, 2)" in message
    assert "items 0, 1, 2, 3, 4" in message
    assert "codebook_size" in message and "levels" in message


def test_level_usage_and_perplexity():
    codes = np.array([[0, 1], [1, 1], [2, 1], [3, 1]])
    usage = level_usage(codes, codebook_size=8)
    assert usage[0]["codes_used"] == 4 and usage[0]["usage"] == 0.5
    assert usage[0]["perplexity"] == pytest.approx(4.0)  # uniform over 4 codes
    assert usage[1]["codes_used"] == 1 and usage[1]["perplexity"] == pytest.approx(1.0)
    assert usage[1]["largest_code_share"] == 1.0


@given(codes=codes_strategy, big=st.booleans())
def test_collision_groups_match_numpys_row_unique(codes, big):
    if big and codes.size:  # codes too large for one 63-bit key per row: numpy's row sort
        codes = codes * (2**40)
    group, sizes = collision_groups(codes)
    if len(codes):
        _, expected_group, expected_sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
        np.testing.assert_array_equal(group, expected_group.reshape(-1))
        np.testing.assert_array_equal(sizes, expected_sizes)
    too_big = len(codes) == 0 or np.prod((codes.max(axis=0) + 1).astype(float)) >= 2**62
    assert (row_keys(codes) is None) == too_big


def test_reconstruction_error_in_chunks_matches_the_formula(monkeypatch):
    import torch

    import genrec.tokenize.metrics as metrics

    rng = np.random.default_rng(0)
    x, r = torch.from_numpy(rng.normal(size=(50, 3))), torch.from_numpy(rng.normal(size=(50, 3)))
    monkeypatch.setattr(metrics, "CHUNK_ROWS", 7)
    got = metrics.reconstruction_error(x.float(), r.float())
    x, r = x.float().double(), r.float().double()
    error = (x - r).pow(2).sum(1)
    assert got["mse"] == pytest.approx(float(error.mean()), rel=1e-12)
    assert got["relative_error"] == pytest.approx(
        float(error.sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-12
    )
