"""Ranking metrics over a full ranking of the catalogue, one held-out item per user.

Every function takes ranked recommendations ``recs`` int64 [U, K] (best first, -1 where a
recommender had fewer than K items) and works with numpy only. Accuracy metrics are per user
(arrays, for paired significance tests); coverage and Gini describe the whole set of lists.

Definitions (rank r is the 0-based position of the target in the user's list):
- recall@K (= hit rate with one target): 1 if r < K else 0;
- ndcg@K: 1 / log2(r + 2) if r < K else 0 (the ideal DCG of one relevant item is 1);
- reciprocal rank: 1 / (r + 1) if the target is in the list, else 0 (MRR cut at the list length);
- coverage@K: distinct items in all top-K lists / catalogue size;
- gini@K: Gini coefficient of how often each catalogue item appears in the top-K lists (items never
  recommended count as 0): 0 when every item is recommended equally often, (n-1)/n when one is;
- novelty@K: mean self-information of a user's top-K items, -log2 p(i) with
  p(i) = (c_i + 1) / (C + n), c_i the item's training interactions, C their total, n the catalogue;
- avg_popularity@K: mean training interaction count c_i of a user's top-K items.
Novelty and popularity average over the valid (non -1) items; a user with none gets NaN.
"""

from __future__ import annotations

import numpy as np


def target_ranks(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """int64 [U]: the position of each user's target in its list, -1 when absent."""
    hits = recs == np.asarray(targets)[:, None]
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1), -1).astype(np.int64)


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    return ((ranks >= 0) & (ranks < k)).astype(np.float64)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    hit = (ranks >= 0) & (ranks < k)
    return np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks >= 0, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0)


def recommendation_counts(recs: np.ndarray, k: int, num_items: int) -> np.ndarray:
    """int64 [num_items]: how many top-K lists each item appears in."""
    top = recs[:, :k]
    return np.bincount(top[top >= 0], minlength=num_items).astype(np.int64)


def coverage(counts: np.ndarray) -> float:
    """Fraction of the catalogue recommended at least once (``counts`` from recommendation_counts)."""
    return float((counts > 0).sum() / len(counts)) if len(counts) else 0.0


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative ``counts`` over the whole catalogue (0 for all equal)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def self_information(train_counts: np.ndarray) -> np.ndarray:
    """float64 [n]: -log2 of each item's add-one smoothed share of the training interactions."""
    c = np.asarray(train_counts, dtype=np.float64)
    return -np.log2((c + 1.0) / (c.sum() + len(c)))


def mean_of_top(recs: np.ndarray, k: int, values: np.ndarray) -> np.ndarray:
    """float64 [U]: the mean of ``values[item]`` over each user's valid top-K items (NaN if none)."""
    top = recs[:, :k]
    valid = top >= 0
    gathered = np.where(valid, np.asarray(values, dtype=np.float64)[np.maximum(top, 0)], 0.0)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, gathered.sum(axis=1) / np.maximum(n, 1), np.nan)
