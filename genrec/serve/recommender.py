"""What every recommender of a trained model shares: histories in, the top k items out, in
batches, with genrec.eval's protocol (``recommend``) and validation's sums (``ranking_sums``).

A subclass says how one batch is ranked (:meth:`BaseRecommender._rank_batch`): the constrained
beam search over semantic IDs (genrec.serve.beam) or inner products with the item vectors
(genrec.serve.inner_product). Models say which through ``GenerativeModel.serving``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from genrec import cpu_threads


def flatten_histories(histories: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """(flat, starts, ends): history i is ``flat[starts[i]:ends[i]]``, int64 item indices."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    parts = [np.asarray(h, dtype=np.int64) for h in histories]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return flat.astype(np.int64), ends - lengths, ends


class BaseRecommender:
    """Top-k items for histories of item indices; subclasses rank one batch.

    Set by the subclass: ``model`` (its ``max_history`` most recent items of a history are read),
    ``device``, ``batch_users`` (users per batch), ``amp_dtype`` (autocast, or None) and
    ``num_items``. The model is put in eval mode while ranking and restored after.
    """

    model: torch.nn.Module
    device: torch.device
    batch_users: int
    amp_dtype: torch.dtype | None
    num_items: int

    def recommend(self, histories, k: int, users: np.ndarray | None = None) -> np.ndarray:
        """genrec.eval's protocol: item indices [len(histories), k], best first, -1 where fewer than k."""
        return self.topk(histories, k, users)[0]

    def topk(self, histories, k: int, users: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(items int64 [U, k], scores float32 [U, k], best first)."""
        flat, starts, ends = flatten_histories(histories)
        return self.topk_ranges(flat, starts, ends, k, users)

    def topk_ranges(
        self, flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int, users: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`topk` for histories given as ``flat[starts[i]:ends[i]]`` (no per-user copies)."""
        self._check_k(k)
        flat = np.asarray(flat, dtype=np.int64)
        if len(flat) and (flat.min() < 0 or flat.max() >= self.num_items):
            raise ValueError(f"histories hold item indices outside 0..{self.num_items - 1}")
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        n = len(starts)
        items = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if n == 0:
            return items, scores
        flat_t = torch.as_tensor(flat, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for lo in range(0, n, self.batch_users):
                cpu_threads.tick()  # fewer threads while other processes hold cores (genrec.cpu_threads)
                hi = min(n, lo + self.batch_users)
                got_items, got_scores = self._rank_batch(
                    flat, flat_t, starts[lo:hi], ends[lo:hi], None if users is None else users[lo:hi], k
                )
                items[lo:hi], scores[lo:hi] = got_items, got_scores
        finally:
            self.model.train(was_training)
        self._ranked(items)
        return items, scores

    def _check_k(self, k: int) -> None:
        """Refuse a k this recommender cannot fill (the beam search keeps only so many)."""

    def _rank_batch(self, flat, flat_t, starts, ends, users, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(items [n, k], scores [n, k]) as numpy for the histories ``flat[starts:ends]``."""
        raise NotImplementedError

    def _ranked(self, items: np.ndarray) -> None:
        """Called with every call's items (the beam search counts invalid slots)."""

    def _recent_items(self, flat_t: torch.Tensor, starts, ends, width: int | None = None):
        """(items [U, width], lengths [U], valid [U, width]): each history's most recent
        ``model.max_history`` items, left-aligned, 0 where padding; ``width`` defaults to the
        longest of them."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        lengths = np.minimum(ends - starts, self.model.max_history)
        width = width if width is not None else max(1, int(lengths.max()))
        lengths_t = torch.as_tensor(lengths, device=self.device)
        first = torch.as_tensor(ends - lengths, device=self.device)
        cols = torch.arange(width, device=self.device)
        valid = cols[None, :] < lengths_t[:, None]
        pos = torch.where(valid, first[:, None] + cols[None, :], torch.zeros_like(valid, dtype=torch.long))
        items = flat_t[pos] * valid if len(flat_t) else torch.zeros_like(pos)
        return items, lengths_t, valid

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def ranking_sums(self, flat, starts, ends, targets, users=None, k: int = 10) -> dict[str, float]:
        """Summed NDCG@k and Recall@k of held-out ``targets`` (one per row), and the row count."""
        items, _ = self.topk_ranges(flat, starts, ends, k, users)
        hit = items == np.asarray(targets)[:, None]
        rank = np.argmax(hit, axis=1)
        found = hit.any(axis=1)
        return {
            f"ndcg@{k}": float(np.sum(found / np.log2(rank + 2.0))),
            f"recall@{k}": float(found.sum()),
            "count": float(len(targets)),
        }
