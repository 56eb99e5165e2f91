"""TIGER: an encoder-decoder transformer that reads a user's history of semantic IDs and
generates the next item's ID one level at a time (Rajput et al., NeurIPS 2023).

Encoder input: an optional hashed-user token, then each history item's T tokens, each token
embedded by its level's table plus a learned embedding of the item's position counted from the
most recent item (or, with ``history_tokens="items"``, one token per item: the sum of its levels'
embeddings, a sequence T times shorter). Optionally each history item also adds a learned
embedding of its own (``num_items`` > 0): memorised item identity beside the semantic ID, on the
input side only; the output is still the semantic ID, decoded under the trie. Decoder input: a learned BOS vector, then the target's first T-1 tokens; its
output at position t gives level t's logits through the tied level-t table.
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

HISTORY_TOKENS = ("levels", "items")


class Tiger(GenerativeModel):
    example_kind = "prefix"

    def __init__(
        self,
        level_sizes: list[int],
        *,
        max_history: int = 20,
        d_model: int = 128,
        encoder_layers: int = 4,
        decoder_layers: int = 4,
        num_heads: int = 6,
        head_dim: int = 64,
        d_ff: int = 1024,
        dropout: float = 0.1,
        user_buckets: int = 0,
        user_dropout: float = 0.0,
        tie_embeddings: bool = True,
        history_tokens: str = "levels",
        num_items: int = 0,
    ) -> None:
        super().__init__(level_sizes, max_history, user_buckets, user_dropout, num_items)
        if history_tokens not in HISTORY_TOKENS:
            raise ValueError(
                f"history_tokens must be one of {', '.join(HISTORY_TOKENS)}, got {history_tokens!r}"
            )
        self.history_tokens = history_tokens
        C = d_model
        self.codes = SemanticIdEmbedding(self.level_sizes, C, tie_embeddings)
        self.item_emb = nn.Embedding(self.num_items, C) if self.num_items else None
        self.item_pos = nn.Embedding(self.max_history, C)  # 0 = the most recent item
        self.user = nn.Embedding(self.user_buckets + 1, C) if self.user_buckets else None
        self.bos = nn.Parameter(torch.zeros(C))
        self.dec_pos = nn.Embedding(self.num_levels, C)
        self.drop = Dropout(dropout)
        self.encoder = nn.ModuleList(
            Block(C, num_heads, head_dim, d_ff, dropout) for _ in range(encoder_layers)
        )
        self.enc_ln = nn.LayerNorm(C)
        self.decoder = nn.ModuleList(
            Block(C, num_heads, head_dim, d_ff, dropout, cross=True) for _ in range(decoder_layers)
        )
        self.dec_ln = nn.LayerNorm(C)
        init_weights(self, encoder_layers + decoder_layers)
        nn.init.normal_(self.bos, std=0.02)

    # ---- encoder ----
    def encode(
        self,
        history: torch.Tensor,
        history_len: torch.Tensor,
        user_ids: torch.Tensor | None = None,
        history_items: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, N, C) and its validity (B, N) for left-aligned histories (B, S, T).

        ``history_tokens="levels"`` (TIGER): one token per semantic-ID level, N = S*T (+1 user token);
        ``"items"``: one token per item, the sum of its levels' embeddings, N = S (+1).
        """
        self.check_history(history, history_len, self.max_history)
        B, S, T = history.shape
        steps = torch.arange(S, device=history.device)
        item_valid = steps[None, :] < history_len[:, None]  # (B, S)
        from_end = (history_len[:, None] - 1 - steps[None, :]).clamp(min=0)  # (B, S)
        history = history.masked_fill(~item_valid[:, :, None], 0)  # padding may hold any value
        per_item = self.item_pos(from_end)  # (B, S, C)
        if self.item_emb is not None:
            per_item = per_item + self.item_emb(self.require_items(history_items, item_valid))
        if self.history_tokens == "items":
            x = self.codes(history).sum(dim=2) + per_item  # (B, S, C)
            valid = item_valid
        else:
            x = (self.codes(history) + per_item[:, :, None, :]).reshape(B, S * T, -1)  # (B, S*T, C)
            valid = item_valid.repeat_interleave(T, dim=1)  # (B, S*T)
        if self.user is not None:
            ids = user_ids if user_ids is not None else torch.full((B,), -1, device=history.device)
            u = self.user(user_buckets(self.drop_users(ids), self.user_buckets))  # (B, C)
            x = torch.cat([u[:, None, :], x], dim=1)
            valid = torch.cat([valid.new_ones(B, 1), valid], dim=1)
        x = self.drop(x)
        mask = valid[:, None, None, :]  # (B, 1, 1, N): padding keys are never attended
        for block in self.encoder:
            x = block(x, mask=mask)
        return self.enc_ln(x), valid

    # ---- training ----
    def forward(self, batch: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Teacher-forced logits of each level of ``batch["target"]`` (B, T): a list of (B, V_t)."""
        memory, valid = self.encode(
            batch["history"], batch["history_len"], batch.get("user_ids"), batch.get("history_items")
        )
        target = batch["target"]
        B, T = target.shape
        prev = [self.codes.level(t, target[:, t]) for t in range(T - 1)]  # T-1 x (B, C)
        x = torch.stack([self.bos.expand(B, -1), *prev], dim=1) + self.dec_pos.weight  # (B, T, C)
        x = self.drop(x)
        mem_mask = valid[:, None, None, :]
        for block in self.decoder:
            x = block(x, is_causal=True, memory_kv=block.cross_attn.memory_kv(memory), memory_mask=mem_mask)
        h = self.dec_ln(x)  # (B, T, C)
        return [self.codes.logits(t, h[:, t]) for t in range(T)]

    def loss_terms(self, batch: Mapping[str, torch.Tensor], label_smoothing: float = 0.0):
        logits = self(batch)
        target = batch["target"]
        total = sum(cross_entropy_sum(lg, target[:, t], None, label_smoothing) for t, lg in enumerate(logits))
        return total, target.numel()

    # ---- decoding ----
    def step_fn(self, batch: Mapping[str, torch.Tensor], beam_size: int, check: bool = True) -> StepFn:
        """Encode each user once; return the cached step function of the decoding contract.

        The encoder memory's cross-attention keys/values (U, H, S, dh) are shared by all beams of
        a user; each step adds one self-attention key/value per beam and reorders the cache
        through ``parents``.
        """
        self._require_eval()
        if check:  # reads a value back from the device; callers that checked on the host skip it
            self.check_nonempty(batch["history_len"])
        with torch.no_grad():
            memory, valid = self.encode(
                batch["history"], batch["history_len"], batch.get("user_ids"), batch.get("history_items")
            )
            memory_kv = [block.cross_attn.memory_kv(memory) for block in self.decoder]
        mem_mask = valid[:, None, None, :]  # (U, 1, 1, S)
        U = memory.shape[0]

        def embed(t: int, prefix: torch.Tensor) -> torch.Tensor:
            # BOS first, then the token chosen at the previous step
            x = self.bos.expand(U, prefix.shape[1], -1) if t == 0 else self.codes.level(t - 1, prefix[:, :, t - 1])
            return x + self.dec_pos.weight[t]

        def cross(i: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return block.cross_attn.step_cross(block.ln_cross(x), memory_kv[i], mem_mask)

        return cached_step_fn(
            users=U,
            num_levels=self.num_levels,
            blocks=self.decoder,
            embed=embed,
            logits=lambda t, x: self.codes.logits(t, self.dec_ln(x)).float(),
            cross=cross,
        )
