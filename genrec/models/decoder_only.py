"""A decoder-only generative recommender: one causal transformer over the flattened semantic IDs.

Sequence: an optional hashed-user token, then each item's T tokens (level tables plus a learned
embedding of the item's position from the start of the window). The output at a token predicts
the next token: within an item its next level, at an item's last token the next item's first.
So one forward pass over a window of consecutive items trains every item after the first as a
target, each seeing the items before it, which is several times cheaper than encoding every
prefix separately.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from genrec.models.base import GenerativeModel, StepFn, cross_entropy_sum
from genrec.models.layers import (
    Block,
    Dropout,
    SemanticIdEmbedding,
    cached_step_fn,
    init_weights,
    user_buckets,
)


class DecoderOnly(GenerativeModel):
    example_kind = "window"

    def __init__(
        self,
        level_sizes: list[int],
        *,
        max_history: int = 20,
        d_model: int = 128,
        num_layers: int = 4,
        num_heads: int = 6,
        head_dim: int = 64,
        d_ff: int = 1024,
        dropout: float = 0.1,
        user_buckets: int = 0,
        user_dropout: float = 0.0,
        tie_embeddings: bool = True,
        num_items: int = 0,
    ) -> None:
        super().__init__(level_sizes, max_history, user_buckets, user_dropout, num_items)
        C = d_model
        self.codes = SemanticIdEmbedding(self.level_sizes, C, tie_embeddings)
        self.item_emb = nn.Embedding(self.num_items, C) if self.num_items else None
        self.item_pos = nn.Embedding(self.max_history + 1, C)  # window position; the target may be last
        self.user = nn.Embedding(self.user_buckets + 1, C) if self.user_buckets else None
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(C, num_heads, head_dim, d_ff, dropout) for _ in range(num_layers))
        self.ln = nn.LayerNorm(C)
        init_weights(self, num_layers)

    @property
    def user_offset(self) -> int:
        return 1 if self.user is not None else 0

    def _embed(
        self, items: torch.Tensor, user_ids: torch.Tensor | None, item_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """items (B, W, T) -> token embeddings (B, u + W*T, C), u = 1 with a user token.

        With item embeddings, an item's own embedding joins its last token only: the outputs at its
        earlier tokens predict its next levels and must not see which item it is.
        """
        B, W, T = items.shape
        x = self.codes(items) + self.item_pos.weight[:W][None, :, None, :]  # (B, W, T, C)
        if self.item_emb is not None:
            valid = torch.ones(B, W, dtype=torch.bool, device=items.device)
            last = self.item_emb(self.require_items(item_idx, valid))  # (B, W, C)
            x = torch.cat([x[:, :, :-1], x[:, :, -1:] + last[:, :, None, :]], dim=2)
        x = x.reshape(B, W * T, -1)
        if self.user is not None:
            ids = user_ids if user_ids is not None else torch.full((B,), -1, device=items.device)
            x = torch.cat(
                [self.user(user_buckets(self.drop_users(ids), self.user_buckets))[:, None, :], x], dim=1
            )
        return self.drop(x)

    def hidden(
        self, items: torch.Tensor, user_ids: torch.Tensor | None = None, item_idx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final hidden states (B, N, C) of left-aligned item runs (B, W, T).

        Padding sits after the real tokens, so a causal mask alone keeps it out of every real
        position's view.
        """
        x = self._embed(items, user_ids, item_idx)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.ln(x)

    # ---- training ----
    def loss_terms(self, batch: Mapping[str, torch.Tensor], label_smoothing: float = 0.0):
        """Cross-entropy of every token of items 1..len-1 of each window (B, W, T)."""
        window, length = batch["window"], batch["window_len"]
        self.check_history(window, length, self.max_history + 1)
        B, W, T = window.shape
        u = self.user_offset
        steps = torch.arange(W, device=window.device)
        pad = steps[None, :] >= length[:, None]  # (B, W)
        window = window.masked_fill(pad[:, :, None], 0)
        items = batch.get("window_items")
        h = self.hidden(window, batch.get("user_ids"), None if items is None else items.masked_fill(pad, 0))
        # The output at flat token p-1 predicts token p; targets are tokens T .. W*T-1.
        h = h[:, u + T - 1 : u + W * T - 1].reshape(B, W - 1, T, -1)  # (B, W-1, T, C)
        target = window[:, 1:]  # (B, W-1, T)
        valid = steps[None, 1:] < length[:, None]  # (B, W-1)
        total = sum(
            cross_entropy_sum(self.codes.logits(t, h[:, :, t]), target[:, :, t], valid, label_smoothing)
            for t in range(T)
        )
        return total, valid.sum() * T

    # ---- decoding ----
    def step_fn(self, batch: Mapping[str, torch.Tensor], beam_size: int, check: bool = True) -> StepFn:
        """Run the history once (prefill) and return the cached step function of the decoding contract.

        The history's keys/values (U, H, N, dh) are shared by all beams of a user; each beam
        keeps only the keys/values of its own generated tokens, reordered through ``parents``.
        """
        self._require_eval()
        history, history_len = batch["history"], batch["history_len"]
        self.check_history(history, history_len, self.max_history)
        if check:  # reads a value back from the device; callers that checked on the host skip it
            self.check_nonempty(history_len)
        U, S, T = history.shape
        u = self.user_offset
        item_valid = torch.arange(S, device=history.device)[None, :] < history_len[:, None]  # (U, S)
        history = history.masked_fill(~item_valid[:, :, None], 0)  # padding may hold any value
        items = batch.get("history_items")
        items = None if items is None else items.masked_fill(~item_valid, 0)
        with torch.no_grad():
            x = self._embed(history, batch.get("user_ids"), items)
            shared_kv = []
            for block in self.blocks:
                x, kv = block(x, is_causal=True, return_kv=True)
                shared_kv.append(kv)  # each (U, H, N, dh)
            last = u + history_len * T - 1  # (U,) the last real token (or the user token)
            h_last = self.ln(x)[torch.arange(U, device=x.device), last]  # (U, C)
            first_logits = self.codes.logits(0, h_last).float()  # (U, V_0)
        tokens = torch.arange(u + S * T, device=history.device)
        shared_mask = tokens[None, :] <= last[:, None]  # (U, N)
        next_pos = self.item_pos(history_len)  # (U, C): the generated item's position
        return cached_step_fn(
            users=U,
            num_levels=self.num_levels,
            blocks=self.blocks,
            embed=lambda t, prefix: self.codes.level(t - 1, prefix[:, :, t - 1]) + next_pos[:, None, :],
            logits=lambda t, x: self.codes.logits(t, self.ln(x)).float(),
            first_logits=first_logits,
            shared=shared_kv,
            shared_mask=shared_mask,
        )
