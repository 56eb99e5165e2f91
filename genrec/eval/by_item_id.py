"""A trained run scored on another dataset whose items are matched to the run's catalogue by id.

``genrec eval --run R --data D --items-by-id``: D need not be the dataset R was trained on (a run
after ``genrec add-items``, or the evaluation users ``genrec data hold-back`` writes). Every item of
the run must be one of D's (else the run could recommend what D cannot count); D's items the run
lacks are never recommended (a target among them is a miss) and leave the histories they sit in.
Users are scored as unknown to the run (no user token).
"""

from __future__ import annotations

import numpy as np


class CatalogueMismatchError(ValueError):
    """The run recommends items the dataset does not have."""


def item_index_map(run_item_ids: list[str], data_item_ids: list[str], where: str) -> np.ndarray:
    """int64 [num data items]: each of the dataset's items' index in the run (-1 where the run lacks
    it). Raises CatalogueMismatchError naming run items the dataset (``where``) lacks."""
    data_index = {str(item_id): i for i, item_id in enumerate(data_item_ids)}
    missing = [item_id for item_id in run_item_ids if str(item_id) not in data_index]
    if missing:
        raise CatalogueMismatchError(
            f"{where}: {len(missing):,} of the run's {len(run_item_ids):,} items are not in this dataset, "
            f"e.g. {', '.join(repr(m) for m in missing[:3])}; --items-by-id needs a dataset holding every item "
            "the run can recommend"
        )
    to_run = np.full(len(data_item_ids), -1, dtype=np.int64)
    for run_index, item_id in enumerate(run_item_ids):
        to_run[data_index[str(item_id)]] = run_index
    return to_run


class ItemIdMapped:
    """``inner`` (a recommender over the run's item indices) seen through the dataset's indices."""

    def __init__(self, inner, to_run: np.ndarray, num_run_items: int) -> None:
        self.inner = inner
        self.to_run = np.asarray(to_run, dtype=np.int64)
        self.to_data = np.full(num_run_items, -1, dtype=np.int64)
        known = self.to_run >= 0
        self.to_data[self.to_run[known]] = np.flatnonzero(known)
        self.name = getattr(inner, "name", type(inner).__name__)
        self.batch_users = getattr(inner, "batch_users", None)
        self.unknown_history_items = 0

    def recommend(self, histories, k: int, users=None) -> np.ndarray:
        mapped = []
        for h in histories:
            run_items = self.to_run[np.asarray(h, dtype=np.int64)]
            self.unknown_history_items += int((run_items < 0).sum())
            mapped.append(run_items[run_items >= 0])
        recs = np.asarray(self.inner.recommend(mapped, k, None), dtype=np.int64)
        return np.where(recs >= 0, self.to_data[np.maximum(recs, 0)], -1)

    def extra_metrics(self) -> dict[str, float]:
        inner = self.inner.extra_metrics() if hasattr(self.inner, "extra_metrics") else {}
        return dict(inner)
