"""Popularity and history-length buckets on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.report import buckets as B


def test_popularity_thirds_of_training_interactions():
    # 60 interactions. Sorted: item 3 (20), item 0 (15), items 1 and 4 (8 each), item 2 (5), item 5 (4), item 6 (0).
    # Share before each: 0, 20/60, 35/60, 43/60, 51/60, 56/60, 1.
    # Cuts at 1/3 and 2/3: item 3 -> head; item 0 starts at exactly 1/3 -> torso; items 1 and 4 tie
    # at 8 and both take the bucket of the first (35/60 < 2/3: torso); items 2, 5, 6 -> tail.
    counts = np.array([15, 8, 5, 20, 8, 4, 0])
    bucket, details = B.item_popularity_buckets(counts)
    assert bucket.tolist() == [1, 1, 2, 0, 1, 2, 2]
    assert [d["items"] for d in details] == [1, 3, 3]
    assert details[0]["interaction_share"] == pytest.approx(20 / 60)
    assert (details[2]["min_count"], details[2]["max_count"]) == (0, 5)

    rows = B.popularity_buckets(np.array([3, 3, 6, 0]), counts)
    assert rows.of_row.tolist() == [0, 0, 2, 1]
    assert [d["users"] for d in rows.details] == [2, 1, 1]
    assert B.bucket_means(np.array([1.0, 0.0, 1.0, 0.5]), rows).tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_popularity_cuts_are_checked():
    with pytest.raises(ValueError, match="increasing"):
        B.item_popularity_buckets(np.array([1, 2]), cuts=(0.7, 0.3))


def test_history_buckets_label_and_drop_empty():
    b = B.history_buckets(np.array([4, 4, 7, 12, 60, 9]), edges=(1, 5, 10, 20, 50))
    assert b.labels == ["1-4", "5-9", "10-19", "50+"]  # 20-49 is empty and dropped
    assert b.of_row.tolist() == [0, 0, 1, 2, 3, 1]
    means = B.bucket_means(np.array([1, 0, 1, 1, 0, 0]), b)
    assert means.tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0])
    short = B.history_buckets(np.array([0, 1, 3]), edges=(2, 4))
    assert short.labels == ["0-1", "2-3"]
