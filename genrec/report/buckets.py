"""Slicing users by the popularity of their held-out item and by the length of their history.

Popularity buckets split the catalogue by training interactions: items sorted from most to least
popular (ties to the smaller index) are cut where the cumulative share of training interactions
crosses each of ``cuts``. With the default thirds, "head" is the few items that carry the first
third of all interactions, "torso" the next third and "tail" the many rare items carrying the
last third (items never seen in training included). A user falls in the bucket of its target.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

POPULARITY_NAMES = ("head", "torso", "tail")
DEFAULT_POPULARITY_CUTS = (1 / 3, 2 / 3)
DEFAULT_HISTORY_EDGES = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class Buckets:
    """``of_row`` int64 [R]: each evaluated row's bucket (0..len(labels)-1), plus a description."""

    labels: list[str]
    of_row: np.ndarray
    details: list[dict]


def item_popularity_buckets(
    train_counts: np.ndarray, cuts=DEFAULT_POPULARITY_CUTS
) -> tuple[np.ndarray, list[dict]]:
    """(bucket int64 [num_items] with 0 = head, 1 = torso, 2 = tail; a description of each bucket)."""
    counts = np.asarray(train_counts, dtype=np.int64)
    cuts = tuple(float(c) for c in cuts)
    increasing = all(a < b for a, b in itertools.pairwise(cuts))
    if len(cuts) != len(POPULARITY_NAMES) - 1 or not increasing or not all(0 < c < 1 for c in cuts):
        raise ValueError(f"popularity cuts must be two increasing shares in (0, 1), got {cuts}")
    order = np.lexsort((np.arange(len(counts)), -counts))  # most popular first
    total = counts.sum()
    ranked = counts[order]
    share_before = (np.cumsum(ranked) - ranked) / max(total, 1)  # share of the items above
    # Items with equal counts share a bucket: each takes the bucket of the first of its count.
    first_of_count = np.searchsorted(-ranked, -ranked, side="left")
    rank_bucket = np.searchsorted(np.asarray(cuts), share_before[first_of_count], side="right")
    bucket = np.empty(len(counts), dtype=np.int64)
    bucket[order] = rank_bucket
    details = []
    for b, name in enumerate(POPULARITY_NAMES):
        members = counts[bucket == b]
        details.append(
            {
                "bucket": name,
                "items": len(members),
                "catalogue_share": float(len(members) / max(len(counts), 1)),
                "interaction_share": float(members.sum() / max(total, 1)),
                "min_count": int(members.min()) if len(members) else None,
                "max_count": int(members.max()) if len(members) else None,
            }
        )
    return bucket, details


def popularity_buckets(
    targets: np.ndarray, train_counts: np.ndarray, cuts=DEFAULT_POPULARITY_CUTS
) -> Buckets:
    """Rows bucketed by the training popularity of their target item."""
    item_bucket, details = item_popularity_buckets(train_counts, cuts)
    of_row = item_bucket[np.asarray(targets, dtype=np.int64)]
    for b, d in enumerate(details):
        d["users"] = int((of_row == b).sum())
    return Buckets(list(POPULARITY_NAMES), of_row, details)


def history_buckets(history_lengths: np.ndarray, edges=DEFAULT_HISTORY_EDGES) -> Buckets:
    """Rows bucketed by history length: [edges[0], edges[1]), ..., [edges[-1], inf); empty buckets dropped."""
    lengths = np.asarray(history_lengths, dtype=np.int64)
    edges = [int(e) for e in edges]
    if not edges or edges != sorted(set(edges)) or edges[0] < 0:
        raise ValueError(f"history edges must be increasing non-negative integers, got {edges}")
    raw = np.searchsorted(np.asarray(edges), lengths, side="right") - 1  # -1: shorter than edges[0]
    labels, details, of_row = [], [], np.full(len(lengths), -1, dtype=np.int64)
    bounds = [(lo, hi) for lo, hi in zip(edges, [*edges[1:], None], strict=True)]
    if (raw < 0).any():
        bounds = [(0, edges[0]), *bounds]
        raw = raw + 1
    for i, (lo, hi) in enumerate(bounds):
        rows = raw == i
        if not rows.any():
            continue
        of_row[rows] = len(labels)
        labels.append(f"{lo}+" if hi is None else (f"{lo}" if hi - 1 == lo else f"{lo}-{hi - 1}"))
        details.append(
            {
                "bucket": labels[-1],
                "min_length": lo,
                "max_length": None if hi is None else hi - 1,
                "users": int(rows.sum()),
            }
        )
    return Buckets(labels, of_row, details)


def bucket_means(values: np.ndarray, buckets: Buckets) -> np.ndarray:
    """float64 [len(labels)]: the mean of ``values`` over each bucket's rows (NaN where none)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(buckets.labels)
    sums = np.bincount(buckets.of_row, weights=values, minlength=n)
    counts = np.bincount(buckets.of_row, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
