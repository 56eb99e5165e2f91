"""What every generative model in genrec shares: the batch it reads, its loss, and how it serves decoding.

A history batch holds, per user, the semantic IDs of the items seen so far, oldest first and
left-aligned: ``history[u, :history_len[u]]`` are real items and the rest is padding (any
value). ``user_ids`` (optional) are user indices; -1 means an unknown user. ``history_items``
[U, S] (optional; required by models with item embeddings) are the history's item indices.

A model serves the beam search through ``model.step_fn(batch, beam_size)`` (see
docs/contracts.md): the returned callable takes ``prefix`` [U, B, t] and ``parents`` [U, B]
(which beam of the previous step each beam extends) and returns level-t logits [U, B, V_t].
It must be called for t = 0, 1, ..., T-1 in order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genrec.step_fn import StepFn


class GenerativeModel(nn.Module):
    """Base class: ``level_sizes`` (vocabulary per semantic-ID column), ``max_history`` (items)."""

    #: how training examples are laid out: "prefix" (one history and one target per example)
    #: or "window" (a run of consecutive items; every item after the first is a target).
    example_kind: str = "prefix"
    #: how the model recommends (genrec.serve.run.recommender_for): "beam_search" (it generates
    #: semantic IDs, decoded over the catalogue's trie) or "inner_product" (its items are their own
    #: one-token IDs, learned in training: no embed or tokenize stage, no beam search).
    serving: str = "beam_search"

    def __init__(
        self,
        level_sizes: list[int],
        max_history: int,
        user_buckets: int,
        user_dropout: float,
        num_items: int = 0,
    ) -> None:
        super().__init__()
        if not level_sizes or min(level_sizes) < 1:
            raise ValueError(f"level_sizes must be a non-empty list of positive sizes, got {level_sizes}")
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.level_sizes = [int(v) for v in level_sizes]
        self.num_levels = len(self.level_sizes)
        self.max_history = int(max_history)
        self.user_buckets = int(user_buckets)
        self.user_dropout = float(user_dropout)
        self.num_items = int(num_items)  # > 0: history items also carry a learned item embedding

    def require_items(self, items: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor:
        """Item indices of history positions (padding -> 0); models with item embeddings need them."""
        if items is None:
            raise ValueError(
                "this model embeds history items by index: the batch needs 'history_items' (or 'window_items')"
            )
        return items.masked_fill(~valid, 0)

    def drop_users(self, user_ids: torch.Tensor) -> torch.Tensor:
        """In training, replace each user id by "unknown" (-1) with probability ``user_dropout``, so the
        unknown-user token is learned too (recommending for a history without a user id uses it)."""
        if not self.training or self.user_dropout == 0:
            return user_ids
        drop = torch.rand(user_ids.shape, device=user_ids.device) < self.user_dropout
        return torch.where(drop, torch.full_like(user_ids, -1), user_ids)

    # ---- input checks shared by training and decoding ----
    def check_history(self, history: torch.Tensor, history_len: torch.Tensor, max_items: int) -> None:
        if history.dim() != 3 or history.shape[2] != self.num_levels:
            raise ValueError(
                f"history must be [users, items, {self.num_levels}] semantic IDs, got {tuple(history.shape)}"
            )
        if history.shape[1] > max_items:
            raise ValueError(
                f"history holds {history.shape[1]} items but this model reads at most {max_items}; "
                "keep the most recent ones (genrec.models.last_items)"
            )
        if history_len.shape != history.shape[:1]:
            raise ValueError(f"history_len must be [{history.shape[0]}], got {tuple(history_len.shape)}")

    def check_nonempty(self, history_len: torch.Tensor) -> None:
        """Without a user token an empty history leaves nothing to attend to."""
        if self.user_buckets == 0 and bool((history_len < 1).any()):
            raise ValueError("every history needs at least one item (or a model with user tokens)")

    def step_fn(self, batch: Mapping[str, torch.Tensor], beam_size: int, check: bool = True) -> StepFn:
        raise NotImplementedError

    def sparse_item_table_blocker(self) -> str | None:
        """Why this model's item table cannot train with row-sparse gradients (None: it can). It can
        when training reads the table by lookups only (``self.item_emb(idx)``), never whole."""
        if getattr(self, "item_emb", None) is None:
            return "the model has no item table (model.item_embeddings = false)"
        return None

    def sparse_item_grads(self, on: bool = True) -> None:
        """Give the item table row-sparse gradients (the rows a batch looked up), for
        :class:`genrec.train.lazy_adamw.LazyAdamW`; refuses a model that reads the table whole."""
        blocker = self.sparse_item_table_blocker()
        if on and blocker:
            raise ValueError(f"row-sparse item-table gradients are not possible: {blocker}")
        emb = getattr(self, "item_emb", None)
        if emb is None:
            return
        emb.sparse = bool(on)
        if on and getattr(self, "_coalesce_hook", None) is None:
            # Each backward hands on the table's gradient with duplicate rows summed: besides being
            # what clipping and LazyAdamW need, DDP (torch 2.14, gloo) reduced uncoalesced sparse
            # gradients wrongly here (a 2-process run left the 1-process loss curve at step 12).
            self._coalesce_hook = emb.weight.register_hook(lambda g: g.coalesce() if g.is_sparse else g)
        elif not on and getattr(self, "_coalesce_hook", None) is not None:
            self._coalesce_hook.remove()
            self._coalesce_hook = None

    def loss_terms(self, batch: Mapping[str, torch.Tensor], label_smoothing: float = 0.0):
        """(sum of per-token cross-entropies, number of target tokens) of a training batch."""
        raise NotImplementedError

    def _require_eval(self) -> None:
        if self.training:
            raise RuntimeError("step_fn decodes with dropout off: call model.eval() first")


def cross_entropy_sum(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Sum of cross-entropies over the valid positions, computed in float32."""
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        reduction="none",
        label_smoothing=label_smoothing,
    )
    if valid is not None:
        loss = loss * valid.reshape(-1).to(loss.dtype)
    return loss.sum()


def last_items(history: torch.Tensor, history_len: torch.Tensor, max_items: int):
    """Keep at most the ``max_items`` most recent items of left-aligned histories (still left-aligned)."""
    U, S, T = history.shape
    if max_items >= S:
        return history, history_len
    keep = history_len.clamp(max=max_items)
    start = history_len - keep  # (U,)
    idx = (start[:, None] + torch.arange(max_items, device=history.device)).clamp(max=S - 1)  # (U, M)
    return history.gather(1, idx[:, :, None].expand(U, max_items, T)), keep
