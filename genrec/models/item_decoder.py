"""A decoder-only model over items, with a small depth decoder for the semantic-ID levels.

The flat decoder-only model spends T tokens on every history item. This one reads one token per
item (the sum of its levels' embeddings, plus an optional learned item embedding, plus its window
position) with a causal "item" transformer, so one pass over a window of W items trains all W-1
next-item targets at a T-times shorter sequence. From the hidden state h_j after item j, a
"depth" transformer of a few layers generates item j+1's semantic ID level by level: its input is
[h_j, e(c_0), ..., e(c_{T-2})] (causal), its output at position t gives level t's logits through
the tied level-t table. This is the spatial/depth split of RQ-Transformer (Lee et al., CVPR 2022)
applied to recommendation.

Decoding: the history runs once per user; h_last is the depth decoder's first position, shared
by all beams (its keys/values are computed once per user); each beam caches only its own
generated tokens' keys/values, reordered through ``parents``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from genrec.models.base import GenerativeModel, StepFn, cross_entropy_sum
from genrec.models.item_head import ItemHead
from genrec.models.layers import (
    Block,
    Dropout,
    SemanticIdEmbedding,
    cached_step_fn,
    init_weights,
    user_buckets,
)


class ItemDecoder(ItemHead, GenerativeModel):
    example_kind = "window"
    #: Catalogue items the item head scores at once at test time (item_head_scan, genrec.fusion):
    #: memory stays at users x head_chunk scores (134 MB a temporary for 1,024 users); a catalogue of
    #: at most this many (Beauty's 12k, Sports' 18k items) is scored whole.
    head_chunk = 1 << 15

    def __init__(
        self,
        level_sizes: list[int],
        *,
        max_history: int = 20,
        d_model: int = 128,
        num_layers: int = 4,
        depth_layers: int = 1,
        num_heads: int = 6,
        head_dim: int = 64,
        d_ff: int = 1024,
        dropout: float = 0.1,
        user_buckets: int = 0,
        user_dropout: float = 0.0,
        tie_embeddings: bool = True,
        num_items: int = 0,
        item_loss: float = 0.0,
        item_negatives: int = 0,
        content_dim: int = 0,
        content_dropout: float = 0.0,
    ) -> None:
        super().__init__(level_sizes, max_history, user_buckets, user_dropout, num_items)
        if content_dim and not num_items:
            raise ValueError(
                "content vectors (content_dim > 0) extend item embeddings: num_items must be > 0"
            )
        if not 0 <= content_dropout < 1:
            raise ValueError(f"content_dropout must be in [0, 1), got {content_dropout}")
        if item_loss < 0 or (item_loss and not num_items):
            raise ValueError(f"item_loss {item_loss} needs item embeddings (num_items > 0) and must be >= 0")
        if item_negatives < 0:
            raise ValueError(f"item_negatives must be >= 0 (0: the whole catalogue), got {item_negatives}")
        self.item_loss = float(item_loss)
        self.item_negatives = int(item_negatives)
        C = d_model
        self.codes = SemanticIdEmbedding(self.level_sizes, C, tie_embeddings)
        self.item_emb = nn.Embedding(self.num_items, C) if self.num_items else None
        # Content vectors (cold start): an item's vector is its free embedding (items seen in
        # training only) plus a projection of its content embedding (the embed stage's output), so
        # an item nobody interacted with still has a vector that says what it is. Both buffers are
        # saved with the weights: a finished run scores (and can take new) items without the embed stage.
        self.content_dim = int(content_dim)
        self.content_dropout = float(content_dropout)
        if self.content_dim:
            self.register_buffer("item_content", torch.zeros(self.num_items, self.content_dim))
            self.register_buffer("item_trained", torch.ones(self.num_items, dtype=torch.bool))
            self.content_proj = nn.Linear(self.content_dim, C, bias=False)
        self.item_pos = nn.Embedding(self.max_history + 1, C)  # window position of each item
        self.user = nn.Embedding(self.user_buckets + 1, C) if self.user_buckets else None
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(C, num_heads, head_dim, d_ff, dropout) for _ in range(num_layers))
        self.ln = nn.LayerNorm(C)
        self.depth_pos = nn.Embedding(self.num_levels, C)
        self.depth_blocks = nn.ModuleList(
            Block(C, num_heads, head_dim, d_ff, dropout) for _ in range(max(1, depth_layers))
        )
        self.depth_ln = nn.LayerNorm(C)
        init_weights(self, num_layers + depth_layers)

    @property
    def user_offset(self) -> int:
        return 1 if self.user is not None else 0

    # ---- the item transformer ----
    def hidden(
        self,
        codes: torch.Tensor,
        length: torch.Tensor,
        user_ids: torch.Tensor | None = None,
        item_idx: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, u + W, C) of left-aligned runs ``codes`` (B, W, T): position u + j has seen
        items 0..j (u = 1 with a user token, whose own state comes first). ``keep``: see
        :meth:`item_vectors`.

        Padding after ``length`` items is zeroed; it sits after the real items, so the causal mask
        keeps it out of every real position's view.
        """
        B, W = codes.shape[:2]
        valid = torch.arange(W, device=codes.device)[None, :] < length[:, None]  # (B, W)
        codes = codes.masked_fill(~valid[:, :, None], 0)
        x = self.codes(codes).sum(dim=2) + self.item_pos.weight[:W]  # (B, W, C)
        if self.item_emb is not None:
            x = x + self.item_vectors(self.require_items(item_idx, valid), keep)
        if self.user is not None:
            ids = user_ids if user_ids is not None else torch.full((B,), -1, device=codes.device)
            u = self.user(user_buckets(self.drop_users(ids), self.user_buckets))  # (B, C)
            x = torch.cat([u[:, None, :], x], dim=1)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.ln(x)

    # ---- the depth decoder ----
    def depth_logits(self, h: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """Teacher-forced logits of each level of ``target`` (N, T) after item states ``h`` (N, C)."""
        T = target.shape[1]
        prev = [self.codes.level(t, target[:, t]) for t in range(T - 1)]  # T-1 x (N, C)
        z = torch.stack([h, *prev], dim=1) + self.depth_pos.weight  # (N, T, C)
        z = self.drop(z)
        for block in self.depth_blocks:
            z = block(z, is_causal=True)
        z = self.depth_ln(z)
        return [self.codes.logits(t, z[:, t]) for t in range(T)]

    # ---- training ----
    def loss_terms(self, batch: Mapping[str, torch.Tensor], label_smoothing: float = 0.0):
        """Cross-entropy of every level of items 1..len-1 of each window (B, W, T)."""
        window, length = batch["window"], batch["window_len"]
        self.check_history(window, length, self.max_history + 1)
        W = window.shape[1]
        keep = self._free_vector_keep(window.device)
        h = self.hidden(
            window[:, :-1], (length - 1).clamp(min=0), batch.get("user_ids"), _head(batch, W), keep
        )
        h = h[:, self.user_offset :]  # (B, W-1, C): position j predicts item j+1
        valid = torch.arange(1, W, device=window.device)[None, :] < length[:, None]  # (B, W-1)
        target = window[:, 1:][valid]  # (N, T): only real targets reach the depth decoder
        h = h[valid]
        logits = self.depth_logits(h, target)
        total = sum(cross_entropy_sum(lg, target[:, t], None, label_smoothing) for t, lg in enumerate(logits))
        if self.item_loss:
            # Auxiliary: the next item itself among the catalogue's items, scored against the
            # learned item embeddings. A dense signal per target that shapes the states the depth decoder
            # reads (as SASRec's loss does); decoding still generates semantic IDs.
            items = batch["window_items"][:, 1:][valid]
            total = total + self.item_loss * self._item_cross_entropy(h, items, label_smoothing, keep)
        return total, valid.sum() * self.num_levels

    def sparse_item_table_blocker(self) -> str | None:
        blocker = super().sparse_item_table_blocker()
        if blocker is None and self.item_loss and not 0 < self.item_negatives < self.num_items:
            return (
                "the item head's softmax runs over the whole catalogue (model.item_negatives = "
                f"{self.item_negatives}); a sampled one (0 < item_negatives < {self.num_items}) reads only its rows"
            )
        return blocker

    def _last_states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(U, C): the item transformer's state after each history's last item (the user token's
        for an empty history): what both the depth decoder and the item head start from.

        Out of training and without gradients, the states of the last batch are kept: decoding a
        batch asks for them three times (the beam's first step, the item head, teacher-forcing
        other sources' candidates). The batch's very tensors (held, so no other tensor can take
        their identity), their in-place versions and the weights' versions must all match. Never
        while a CUDA graph is being captured: a replay runs no Python, so a kept result would leave
        the transformer out of the graph and every replay would reuse the capture batch's states."""
        keys = ("history", "history_len", "user_ids", "history_items")
        tensors = tuple(batch.get(k) for k in keys)
        memo_ok = (
            not self.training
            and not torch.is_grad_enabled()
            and not any(t is not None and t.is_inference() for t in tensors)  # no version counters
            and not _capturing_cuda_graph()
        )
        if memo_ok:
            versions = tuple(-1 if t is None else t._version for t in tensors) + self._weight_versions()
            memo = getattr(self, "_states_memo", None)
            if (
                memo is not None
                and len(memo[0]) == len(tensors)
                and all(a is b for a, b in zip(memo[0], tensors, strict=True))
                and memo[1] == versions
            ):
                return memo[2]
        history, history_len = batch["history"], batch["history_len"]
        U = history.shape[0]
        if history.shape[1] == 0:
            history = history.new_zeros(U, 1, self.num_levels)
        h = self.hidden(history, history_len, batch.get("user_ids"), batch.get("history_items"))
        states = h[torch.arange(U, device=h.device), (self.user_offset + history_len - 1).clamp(min=0)]
        self._states_memo = (tensors, versions, states) if memo_ok else None
        return states

    def _weight_versions(self) -> tuple[int, ...]:
        """In-place update counters of every parameter and buffer: an optimizer step or a load
        between two calls changes them."""
        return tuple(t._version for t in self.parameters()) + tuple(b._version for b in self.buffers())

    # ---- decoding ----
    def step_fn(self, batch: Mapping[str, torch.Tensor], beam_size: int, check: bool = True) -> StepFn:
        """Run each history once; the depth decoder's first position (the history's last state) is
        shared by a user's beams, each beam caches its own generated tokens."""
        self._require_eval()
        history, history_len = batch["history"], batch["history_len"]
        self.check_history(history, history_len, self.max_history)
        if check:  # reads a value back from the device; callers that checked on the host skip it
            self.check_nonempty(history_len)
        U = history.shape[0]
        with torch.no_grad():
            h_last = self._last_states(batch)  # (U, C)
            z = self.drop(h_last + self.depth_pos.weight[0])[:, None, :]  # (U, 1, C)
            shared = []
            for block in self.depth_blocks:
                z, kv = block(z, return_kv=True)  # one position: nothing to mask
                shared.append(kv)  # each (U, H, 1, dh)
            first_logits = self.codes.logits(0, self.depth_ln(z[:, 0])).float()  # (U, V_0)
        shared_mask = torch.ones(U, 1, dtype=torch.bool, device=history.device)
        return cached_step_fn(
            users=U,
            num_levels=self.num_levels,
            blocks=self.depth_blocks,
            embed=lambda t, prefix: self.codes.level(t - 1, prefix[:, :, t - 1]) + self.depth_pos.weight[t],
            logits=lambda t, x: self.codes.logits(t, self.depth_ln(x)).float(),
            first_logits=first_logits,
            shared=shared,
            shared_mask=shared_mask,
        )


def _capturing_cuda_graph() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _head(batch: Mapping[str, torch.Tensor], W: int) -> torch.Tensor | None:
    """The item indices of a window's first W-1 items (the part the item transformer reads)."""
    items = batch.get("window_items")
    return None if items is None else items[:, : W - 1]
