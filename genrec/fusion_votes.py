"""The co-occurrence votes of one batch of histories, in the form the fusion reads them
(genrec.fusion): summed per (row, item), the history's own items left out where asked, each row's
best ``m`` items, and the votes of any candidate items.

The same numbers as ``CoOccurrence.voted`` followed by a sort per row, without its cost: at 100k
items a batch of 1,024 histories casts ~7M votes, and ``voted``'s three-key lexsort of all of them
took most of a batch's fusion time, while the fusion needs only each row's best few. So:

- the votes come as one ascending run of item indices per (row, recent item) (the CSR rows of the
  pair matrix), and a stable argsort merges such runs in near-linear time; the sums are taken by
  ``np.bincount`` in the order the votes were cast, as ``voted`` does, so they are bit-identical;
- a row's best m by (score desc, popularity priority asc) are found by a partition per row (its
  m-th best score) and a lexsort of only the votes at or above it;
- lookups go by binary search on the (row, item)-sorted keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class BatchVotes:
    """``cooccurrence`` (genrec.eval.baselines.CoOccurrence)'s summed votes for ``histories``;
    with ``exclude_history``, a row's own history items get no votes."""

    def __init__(self, cooccurrence, histories: Sequence[np.ndarray], exclude_history: bool) -> None:
        histories = [np.asarray(h, dtype=np.int64) for h in histories]
        n = cooccurrence.num_items
        self.num_rows, self.num_items = len(histories), n
        self.priority = cooccurrence.priority
        row, item, weight = cooccurrence._votes(histories)
        keys = row * n + item
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        group = np.empty(len(ordered), dtype=np.int64)
        group[order] = np.cumsum(first) - 1
        # bincount adds the weights in the order they were cast: the sums of CoOccurrence.voted.
        score = np.bincount(group, weights=weight, minlength=int(first.sum()))
        keys = ordered[first]
        if exclude_history and len(keys):
            lengths = [len(h) for h in histories]
            own = np.repeat(np.arange(len(histories), dtype=np.int64), lengths) * n + np.concatenate(
                histories or [np.zeros(0, np.int64)]
            )
            pos = np.minimum(np.searchsorted(keys, own), len(keys) - 1)
            drop = np.zeros(len(keys), dtype=bool)
            drop[pos[keys[pos] == own]] = True
            keys, score = keys[~drop], score[~drop]
        self.keys, self.score = keys, score  # sorted by (row, item), one entry per voted pair

    def top(self, m: int) -> torch.Tensor:
        """[rows, m]: each row's m best voted items by (votes desc, popularity priority asc, as
        CoOccurrence.voted orders them), -1 padded."""
        out = np.full((self.num_rows, m), -1, dtype=np.int64)
        if m <= 0 or not len(self.keys):
            return torch.as_tensor(out)
        n = self.num_items
        row = self.keys // n
        bounds = np.searchsorted(row, np.arange(self.num_rows + 1))
        # Each row's m-th best score: only votes at or above it can be among its best m.
        floor = np.full(self.num_rows, -np.inf)
        for r in np.flatnonzero(np.diff(bounds) > m):
            lo, hi = bounds[r], bounds[r + 1]
            floor[r] = np.partition(self.score[lo:hi], hi - lo - m)[hi - lo - m]
        near = np.flatnonzero(self.score >= floor[row])
        item, score, row = self.keys[near] % n, self.score[near], row[near]
        order = np.lexsort((self.priority[item], -score, row))
        row, item = row[order], item[order]
        place = np.arange(len(row)) - np.searchsorted(row, row)
        keep = place < m
        out[row[keep], place[keep]] = item[keep]
        return torch.as_tensor(out)

    def of(self, items: np.ndarray) -> torch.Tensor:
        """[rows, M] float32: the summed votes for candidate ``items`` [rows, M] (0 where none, and
        for -1 slots)."""
        items = np.asarray(items)
        out = np.zeros(items.shape, dtype=np.float64)
        if len(self.keys):
            want = (np.arange(items.shape[0])[:, None] * self.num_items + np.maximum(items, 0)).ravel()
            pos = np.minimum(np.searchsorted(self.keys, want), len(self.keys) - 1)
            found = self.keys[pos] == want
            out = np.where(found, self.score[pos], 0.0).reshape(items.shape)
            out[items < 0] = 0.0
        return torch.as_tensor(out, dtype=torch.float32)
