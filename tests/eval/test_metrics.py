"""Each metric against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genrec.eval import metrics as M

RECS = np.array([[3, 1, 2], [0, 1, 2], [2, -1, -1]])
TARGETS = np.array([1, 5, 2])


def test_ranks_recall_ndcg_reciprocal_rank():
    ranks = M.target_ranks(RECS, TARGETS)
    assert ranks.tolist() == [1, -1, 0]
    assert M.recall_at(ranks, 1).tolist() == [0, 0, 1]
    assert M.recall_at(ranks, 2).tolist() == [1, 0, 1]
    assert M.ndcg_at(ranks, 1).tolist() == [0, 0, 1]
    assert M.ndcg_at(ranks, 2) == pytest.approx([1 / math.log2(3), 0, 1])
    assert M.reciprocal_rank(ranks).tolist() == [0.5, 0, 1]


def test_coverage_and_gini():
    counts = M.recommendation_counts(RECS, 2, num_items=6)
    assert counts.tolist() == [1, 2, 1, 1, 0, 0]  # the -1 padding is not an item
    assert M.coverage(counts) == pytest.approx(4 / 6)
    # sorted [0, 0, 1, 1, 1, 2]: sum (2i - n - 1) x_i = -1 + 1 + 3 + 10 = 13, over n * total = 30
    assert M.gini(counts) == pytest.approx(13 / 30)
    assert M.gini(np.array([5, 5, 5])) == 0
    assert M.gini(np.array([0, 0, 9])) == pytest.approx(2 / 3)  # (n - 1) / n: all on one item
    assert M.gini(np.zeros(4)) == 0


def test_novelty_and_average_popularity():
    train_counts = np.array([5, 2, 1, 0])  # C = 8, n = 4: p = (c + 1) / 12
    info = M.self_information(train_counts)
    assert info == pytest.approx([1, 2, math.log2(6), math.log2(12)])
    recs = np.array([[0, 1], [3, -1], [-1, -1]])
    novelty = M.mean_of_top(recs, 2, info)
    assert novelty[:2] == pytest.approx([1.5, math.log2(12)]) and math.isnan(novelty[2])
    popularity = M.mean_of_top(recs, 2, train_counts)
    assert popularity[:2].tolist() == [3.5, 0.0] and math.isnan(popularity[2])
    assert M.mean_of_top(recs, 1, train_counts)[:2].tolist() == [5.0, 0.0]
