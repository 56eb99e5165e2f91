"""Recommending by inner product between a model's history vectors and its item vectors (models
whose items are their own IDs: SASRec), through genrec.retrieval's index."""

from __future__ import annotations

import numpy as np
import torch

from genrec.retrieval import InnerProductIndex
from genrec.serve.recommender import BaseRecommender


class InnerProductRecommender(BaseRecommender):
    """Top-k by inner product between a model's history vectors and its item vectors.

    ``model`` provides ``user_vectors(history [U, S], history_len [U]) -> [U, D]`` (the history
    left-aligned, item indices, padding anywhere after ``history_len``), ``item_vectors() -> [N, D]``
    and ``max_history``. The index is built from the item vectors on first use and rebuilt by
    :meth:`refresh` (training changes them).

    ``exclude_seen`` leaves every item of a user's (whole) history out of its list: the index is
    asked for enough extra items to fill k after dropping them. None follows the model's
    ``exclude_seen`` attribute (False when it has none).
    """

    def __init__(
        self,
        model,
        *,
        batch_users: int = 1024,
        device: torch.device | str | None = None,
        kind: str = "exact",
        backend: str = "auto",
        amp_dtype: torch.dtype | None = None,
        exclude_seen: bool | None = None,
        **index_options,
    ) -> None:
        self.model = model
        self.exclude_seen = bool(
            getattr(model, "exclude_seen", False) if exclude_seen is None else exclude_seen
        )
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_users = int(batch_users)
        self.kind, self.backend, self.index_options = kind, backend, index_options
        self.amp_dtype = amp_dtype
        self.name = type(model).__name__.lower()
        self._index: InnerProductIndex | None = None

    @property
    def num_items(self) -> int:
        return int(self.model.num_items)

    @property
    def index(self) -> InnerProductIndex:
        if self._index is None:
            self.refresh()
        return self._index

    def refresh(self) -> None:
        """Rebuild the index from the model's current item vectors."""
        with torch.no_grad():
            vectors = self.model.item_vectors().detach().float()
        self._index = InnerProductIndex(vectors, kind=self.kind, backend=self.backend, **self.index_options)

    def config(self) -> dict:
        return {"model": self.name, "retrieval": self.index.describe(), "exclude_seen": self.exclude_seen}

    def _rank_batch(self, flat, flat_t, starts, ends, users, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        history, length, _ = self._recent_items(flat_t, starts, ends)
        with torch.no_grad(), self._autocast():
            queries = self.model.user_vectors(history, length)
        if not self.exclude_seen:
            scores, items = index.search(queries.float(), k)
            return items, scores
        items = np.full((len(starts), k), -1, dtype=np.int64)
        scores = np.full((len(starts), k), -np.inf, dtype=np.float32)
        seen = [np.unique(flat[s:e]) for s, e in zip(starts, ends, strict=True)]
        fetch = min(self.num_items, k + max(len(s) for s in seen))
        got_scores, got_items = index.search(queries.float(), fetch)
        for r, (row_items, row_scores, row_seen) in enumerate(zip(got_items, got_scores, seen, strict=True)):
            keep = (row_items >= 0) & ~np.isin(row_items, row_seen)
            kept = row_items[keep][:k]
            items[r, : len(kept)] = kept
            scores[r, : len(kept)] = row_scores[keep][:k]
        return items, scores
