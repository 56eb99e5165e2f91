"""SASRec (Kang & McAuley, 2018): causal self-attention over item embeddings with learned positions.

Every position of a training window predicts the next item from the items before it. The score
of item i after a history is the inner product of the last position's hidden state with the
item's embedding (tied input/output embeddings), so top-K is a maximum-inner-product search
(genrec.retrieval). Losses:

- ``"ce"`` (default): cross-entropy over the whole catalogue at every position, the recipe that
  makes SASRec stronger than BERT4Rec and every published generative model on Amazon Beauty
  (Klenitskiy & Vasilev, RecSys 2023);
- ``"bce"``: the original sampled binary cross-entropy, the target against ``negatives`` items
  drawn uniformly from the catalogue (a draw equal to the target is ignored).

The model reads each item as one token, its index: the identity tokenization, whose "semantic
ID" has a single level of ``num_items`` codes. So it is a :class:`GenerativeModel` with
``level_sizes = [num_items]``: the training loop's window batches ([B, W, 1] item indices) and
the decoding contract (a one-level ``step_fn``) carry over unchanged, while
:meth:`user_vectors` / :meth:`item_vectors` give the fast top-K path.

With ``exclude_seen`` the model never recommends an item already in the user's history: where
items are not bought twice (Amazon 5-core: no test item appears in its user's history) the
items it would repeat only take the places of new ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.base import GenerativeModel, StepFn
from genrec.models.layers import Block, Dropout, init_weights
from genrec.models.losses import MAX_LOGITS, softmax_cross_entropy

LOSSES = ("ce", "bce")
def identity_codes(num_items: int) -> np.ndarray:
    """int64 [num_items, 1]: each item's one-token ID is its index (what SASRec's batches carry)."""
    return np.arange(num_items, dtype=np.int64)[:, None]


class SASRec(GenerativeModel):
    example_kind = "window"
    serving = "inner_product"
    #: Batches with more logits than this compute the cross-entropy in chunks (see softmax_cross_entropy).
    max_logits = MAX_LOGITS

    def sparse_item_table_blocker(self) -> str | None:
        return "SASRec scores its targets against the whole item table (tied output embeddings)"

    def __init__(
        self,
        num_items: int,
        *,
        max_history: int = 50,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        head_dim: int = 0,
        d_ff: int = 0,
        dropout: float = 0.2,
        loss: str = "ce",
        negatives: int = 1,
        exclude_seen: bool = False,
    ) -> None:
        """``head_dim`` 0 means d_model / num_heads; ``d_ff`` 0 means d_model (the original's
        point-wise feed-forward width); ``negatives`` is used by the "bce" loss only.
        ``exclude_seen``: recommend only items outside the user's history (read by
        genrec.retrieval.InnerProductRecommender; the scores themselves are unchanged)."""
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
        if negatives < 1:
            raise ValueError(f"negatives must be >= 1, got {negatives}")
        if num_layers < 1 or num_heads < 1 or d_model < 1:
            raise ValueError(
                f"d_model, num_layers and num_heads must be >= 1, got {d_model}, {num_layers}, {num_heads}"
            )
        if not head_dim and d_model % num_heads:
            raise ValueError(f"d_model {d_model} does not divide into {num_heads} heads; set head_dim")
        super().__init__([num_items], max_history, user_buckets=0, user_dropout=0.0)
        self.num_items = int(num_items)
        self.d_model = int(d_model)
        self.loss_kind = loss
        self.negatives = int(negatives)
        self.exclude_seen = bool(exclude_seen)
        head_dim = head_dim or d_model // num_heads
        self.item_emb = nn.Embedding(num_items, d_model)
        self.pos_emb = nn.Embedding(self.max_history, d_model)  # position 0 = the window's oldest item
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, head_dim, d_ff or d_model, dropout) for _ in range(num_layers)
        )
        self.ln = nn.LayerNorm(d_model)
        init_weights(self, num_layers)

    # ---- the encoder ----
    @staticmethod
    def _item_ids(tokens: torch.Tensor) -> torch.Tensor:
        """[B, S, 1] one-token IDs (the training loop's layout) or [B, S] item indices -> [B, S]."""
        if tokens.dim() == 3:
            if tokens.shape[2] != 1:
                raise ValueError(
                    f"SASRec reads one token per item, got histories of shape {tuple(tokens.shape)}"
                )
            tokens = tokens[:, :, 0]
        if tokens.dim() != 2:
            raise ValueError(f"expected item indices [users, items], got shape {tuple(tokens.shape)}")
        return tokens

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, S, C) of left-aligned item runs (B, S); position s sees items 0..s.

        Padding after the real items never reaches a real position (the mask is causal).
        """
        S = items.shape[1]
        if self.max_history < S:
            raise ValueError(f"runs of {S} items exceed max_history {self.max_history}")
        x = self.item_emb(items) * math.sqrt(self.d_model) + self.pos_emb.weight[:S][None]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.ln(x)

    def item_vectors(self) -> torch.Tensor:
        """[num_items, C]: the output embedding of every item (scores are inner products with it)."""
        return self.item_emb.weight

    def user_vectors(self, history: torch.Tensor, history_len: torch.Tensor) -> torch.Tensor:
        """[U, C]: the hidden state after each left-aligned history (the most recent max_history items)."""
        items = self._item_ids(history)
        if items.shape[1] > self.max_history:
            raise ValueError(
                f"history holds {items.shape[1]} items but this model reads at most {self.max_history}; "
                "keep the most recent ones"
            )
        if history_len.shape != items.shape[:1]:
            raise ValueError(f"history_len must be [{items.shape[0]}], got {tuple(history_len.shape)}")
        self.check_nonempty(history_len)
        valid = torch.arange(items.shape[1], device=items.device)[None, :] < history_len[:, None]
        h = self.hidden(items.masked_fill(~valid, 0))
        return h[torch.arange(items.shape[0], device=items.device), history_len - 1]

    def scores(self, history: torch.Tensor, history_len: torch.Tensor) -> torch.Tensor:
        """[U, num_items] next-item scores (logits) of each history."""
        return self.user_vectors(history, history_len) @ self.item_vectors().T

    # ---- training ----
    def loss_terms(self, batch: Mapping[str, torch.Tensor], label_smoothing: float = 0.0):
        """(summed loss over every next-item target of the windows, number of targets).

        ``batch["window"]`` [B, W(, 1)] holds runs of consecutive items, left-aligned, with
        ``window_len`` [B] real items each; item j >= 1 is predicted from items 0..j-1.
        """
        window = self._item_ids(batch["window"])
        length = batch["window_len"]
        W = window.shape[1]
        if W < 2:
            raise ValueError("training windows need at least 2 items (a history and a target)")
        steps = torch.arange(W, device=window.device)
        window = window.masked_fill(steps[None, :] >= length[:, None], 0)
        h = self.hidden(window[:, :-1])  # (B, W-1, C)
        valid = steps[None, 1:] < length[:, None]  # (B, W-1): position j predicts item j+1
        h = h[valid]  # (N, C): only real targets reach the output layer
        target = window[:, 1:][valid]  # (N,)
        items = self.item_vectors()
        if self.loss_kind == "ce":
            total = softmax_cross_entropy(h, items, target, label_smoothing, self.max_logits)
        else:
            total = self._bce(h, target, items)
        return total, valid.sum()

    def _bce(self, h: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        n = target.shape[0]
        negatives = torch.randint(0, self.num_items, (n, self.negatives), device=target.device)
        pos = (h * items[target]).sum(-1).float()  # (N,)
        neg = torch.einsum("nc,nkc->nk", h, items[negatives]).float()  # (N, K)
        keep = (negatives != target[:, None]).float()
        return F.softplus(-pos).sum() + (F.softplus(neg) * keep).sum()

    # ---- decoding ----
    def step_fn(self, batch: Mapping[str, torch.Tensor], beam_size: int, check: bool = True) -> StepFn:
        """The one-level decoding contract: step 0 returns every item's score for every beam.
        (``check`` is accepted like the other models'; histories are always checked here.)"""
        self._require_eval()
        with torch.no_grad():
            logits = self.scores(batch["history"], batch["history_len"]).float()  # (U, N)
        U = logits.shape[0]

        def step(prefix: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
            if prefix.shape[0] != U or prefix.shape[2] != 0:
                raise ValueError(
                    f"SASRec decodes one level: expected prefix [{U}, beams, 0], got {tuple(prefix.shape)}"
                )
            return logits[:, None, :].expand(U, prefix.shape[1], -1)

        return step
