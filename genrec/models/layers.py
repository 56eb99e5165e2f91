"""Transformer building blocks shared by the generative models: attention with a key/value
cache, feed-forward, pre-norm blocks, and the semantic-ID token embedding.

Attention projects d_model -> num_heads * head_dim and back, so a model may use more attention
width than its residual stream (TIGER: d_model 128, 6 heads of 64), as T5-style configs do.
Every decode-time path here has a full-sequence twin; the tests hold the cached paths to the
full forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genrec.ops import dropout_multiplier
from genrec.step_fn import StepFn


class Dropout(nn.Module):
    """``nn.Dropout`` whose CPU mask comes from genrec.ops.dropout_multiplier: torch's CPU dropout
    draws its mask with a serial generator (about 10 ns an element, a third of a training step of
    these models on two cores); the counter-based one fills it in parallel. The seed is drawn from
    torch's generator, so ``torch.manual_seed`` and a checkpoint's RNG state decide the masks as
    before. Other devices use torch's fused dropout."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        seed = int(torch.empty((), dtype=torch.int64).random_())  # [0, 2^63): torch's CPU generator
        return x * dropout_multiplier(x, seed, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff)
        self.proj = nn.Linear(d_ff, d_model)
        self.proj.is_residual_projection = True
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.dropout(F.gelu(self.fc(x)))))


class Attention(nn.Module):
    """Multi-head attention over ``num_heads`` heads of ``head_dim``; self- or cross-attention.

    ``cross=False``: one fused q/k/v projection of the input. ``cross=True``: queries from the
    input, keys and values from a memory (projected once by :meth:`memory_kv`, then reused by
    every decoding step).
    """

    def __init__(self, d_model: int, num_heads: int, head_dim: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.cross = num_heads, head_dim, cross
        inner = num_heads * head_dim
        if cross:
            self.q = nn.Linear(d_model, inner, bias=False)
            self.kv = nn.Linear(d_model, 2 * inner, bias=False)
        else:
            self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, d_model, bias=False)
        self.proj.is_residual_projection = True
        self.attn_dropout = dropout
        self.resid_dropout = Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, dh)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, N, dh = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, N, H * dh)))  # (B, N, C)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a memory (B, S, C) for cross-attention, each (B, H, S, dh)."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_kv: bool = False,
    ):
        """Full-sequence attention. x (B, N, C); ``mask`` broadcastable to (B, H, N, S), True = attend.

        With ``return_kv`` (self-attention) also returns this layer's keys and values (B, H, N, dh),
        the prefill of a key/value cache.
        """
        dropout = self.attn_dropout if self.training else 0.0
        if self.cross:
            q = self._heads(self.q(x))
            k, v = memory_kv
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
        out = self._merge(y)
        return (out, (k, v)) if return_kv else out

    def step_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of one new token per beam: x (U, B, C) -> each (U, B, H, dh)."""
        U, B, _ = x.shape
        qkv = self.qkv(x).view(U, B, 3, self.num_heads, self.head_dim)
        return qkv.unbind(2)

    def step_out(self, y: torch.Tensor) -> torch.Tensor:
        """(U, B, H, dh) attention result -> (U, B, C)."""
        U, B, H, dh = y.shape
        return self.resid_dropout(self.proj(y.reshape(U, B, H * dh)))

    def step_cross(
        self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Cross-attention of one new token per beam, x (U, B, C), to its user's memory.

        The memory keys/values (U, H, S, dh) are shared by all beams of a user: the beams act as
        B query positions of one attention call per user, so nothing is copied per beam.
        """
        U, B, _ = x.shape
        q = self.q(x).view(U, B, self.num_heads, self.head_dim).transpose(1, 2)  # (U, H, B, dh)
        k, v = memory_kv
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask)  # (U, H, B, dh)
        return self.step_out(y.transpose(1, 2))


def attend_shared_and_own(
    q: torch.Tensor,
    shared_kv: tuple[torch.Tensor, torch.Tensor],
    shared_mask: torch.Tensor,
    own_kv: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """One decoding step's attention over a per-user prefix shared by all beams plus each beam's own keys.

    q (U, B, H, dh); shared keys/values (U, H, N, dh) with ``shared_mask`` (U, N) True where valid;
    own keys/values (U, B, H, t, dh). One softmax over both parts, exactly as if the shared
    prefix had been copied into every beam, without the copy. Returns (U, B, H, dh).
    """
    k_shared, v_shared = shared_kv
    k_own, v_own = own_kv
    scale = 1.0 / math.sqrt(q.shape[-1])
    s_shared = torch.einsum("ubhd,uhnd->uhbn", q, k_shared) * scale  # (U, H, B, N)
    s_shared = s_shared.masked_fill(~shared_mask[:, None, None, :], float("-inf"))
    s_own = torch.einsum("ubhd,ubhtd->uhbt", q, k_own) * scale  # (U, H, B, t)
    p = torch.cat([s_shared, s_own], dim=-1).softmax(dim=-1)
    p_shared, p_own = p.split([s_shared.shape[-1], s_own.shape[-1]], dim=-1)
    return torch.einsum("uhbn,uhnd->ubhd", p_shared, v_shared) + torch.einsum(
        "uhbt,ubhtd->ubhd", p_own, v_own
    )


def attend_own(q: torch.Tensor, own_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One decoding step's attention of each beam to its own keys alone: q (U, B, H, dh), own
    keys/values (U, B, H, t, dh) -> (U, B, H, dh).

    Written out rather than through scaled_dot_product_attention: as one attention call its batch is
    users x beams, and CUDA's attention kernels refuse a batch over 65,535 (8,192 users at beam 20),
    while t is at most the number of levels.
    """
    k_own, v_own = own_kv
    scores = torch.einsum("ubhd,ubhtd->ubht", q, k_own) * (1.0 / math.sqrt(q.shape[-1]))
    return torch.einsum("ubht,ubhtd->ubhd", scores.softmax(dim=-1), v_own)


def reorder_beams(cache: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """Select each beam's parent along dim 1: cache (U, B_prev, ...), parents (U, B) -> (U, B, ...)."""
    users = torch.arange(cache.shape[0], device=cache.device)[:, None]
    return cache[users, parents]


def cached_step_fn(
    *,
    users: int,
    num_levels: int,
    blocks: Sequence[nn.Module],
    embed: Callable[[int, torch.Tensor], torch.Tensor],
    logits: Callable[[int, torch.Tensor], torch.Tensor],
    first_logits: torch.Tensor | None = None,
    shared: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    shared_mask: torch.Tensor | None = None,
    cross: Callable[[int, nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> StepFn:
    """The decoding contract's step function over pre-norm ``blocks`` with a per-beam cache: what
    the three generative models share; each supplies its prefill through these arguments.

    ``embed(t, prefix)`` -> (U, B, C): the input of step t (the token chosen at step t - 1, or a
    start token, plus its position); ``logits(t, x)`` -> (U, B, V_t) from the last block's
    output. ``first_logits`` (U, V_0): step 0 answered by the prefill (the decoder-only models,
    whose history's last state predicts the first token), so the beams' own tokens start at
    step 1. ``shared`` per block (k, v) (U, H, N, dh), valid where ``shared_mask`` (U, N): a
    prefix every beam of a user attends to (the history), never copied per beam; without it the
    beams attend to their own tokens alone. ``cross(i, block, x)`` -> the residual of block i's
    cross-attention (TIGER's encoder memory). Each step appends one key/value per beam and
    reorders the cache through ``parents``; steps must come in order, once each.
    """
    own_from = 0 if first_logits is None else 1
    cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(blocks)
    expected = [0]

    @torch.no_grad()
    def step(prefix: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        _, B, t = prefix.shape
        if prefix.shape[0] != users or t != expected[0] or t >= num_levels:
            raise ValueError(
                f"step_fn expects prefix [{users}, beams, {expected[0]}] (steps in order, t < "
                f"{num_levels}), got {tuple(prefix.shape)}"
            )
        expected[0] += 1
        if first_logits is not None and t == 0:
            return first_logits[:, None, :].expand(users, B, -1)
        x = embed(t, prefix)  # (U, B, C)
        for i, block in enumerate(blocks):
            attn = block.self_attn
            q, k, v = attn.step_qkv(block.ln_self(x))  # each (U, B, H, dh)
            k, v = k[:, :, :, None], v[:, :, :, None]  # (U, B, H, 1, dh)
            if t > own_from:
                ck, cv = cache[i]
                k = torch.cat([reorder_beams(ck, parents), k], dim=3)  # (U, B, H, own tokens, dh)
                v = torch.cat([reorder_beams(cv, parents), v], dim=3)
            cache[i] = (k, v)
            if shared is None:
                y = attend_own(q, (k, v))  # (U, B, H, dh)
            else:
                y = attend_shared_and_own(q, shared[i], shared_mask, (k, v))  # (U, B, H, dh)
            x = x + attn.step_out(y)
            if cross is not None:
                x = x + cross(i, block, x)
            x = x + block.ff(block.ln_ff(x))
        return logits(t, x)

    return step


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, feed-forward."""

    def __init__(
        self, d_model: int, num_heads: int, head_dim: int, d_ff: int, dropout: float, cross: bool = False
    ) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, num_heads, head_dim, dropout, cross=False)
        self.ln_cross = nn.LayerNorm(d_model) if cross else None
        self.cross_attn = Attention(d_model, num_heads, head_dim, dropout, cross=True) if cross else None
        self.ln_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        memory_mask: torch.Tensor | None = None,
        return_kv: bool = False,
    ):
        a = self.self_attn(self.ln_self(x), mask=mask, is_causal=is_causal, return_kv=return_kv)
        a, kv = a if return_kv else (a, None)
        x = x + a
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.ln_cross(x), mask=memory_mask, memory_kv=memory_kv)
        x = x + self.ff(self.ln_ff(x))
        return (x, kv) if return_kv else x


class SemanticIdEmbedding(nn.Module):
    """One embedding table per semantic-ID level (column of semantic_ids), tied to the output heads.

    ``level_sizes[t]`` is the vocabulary of column t. Level t's logits are the hidden state
    dotted with table t (weight tying) or, untied, a separate linear head per level.
    """

    def __init__(self, level_sizes: list[int], d_model: int, tie: bool) -> None:
        super().__init__()
        self.level_sizes = list(level_sizes)
        self.tables = nn.ModuleList(nn.Embedding(v, d_model) for v in self.level_sizes)
        self.heads = (
            None if tie else nn.ModuleList(nn.Linear(d_model, v, bias=False) for v in self.level_sizes)
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., T) of all levels -> (..., T, C)."""
        return torch.stack([table(codes[..., t]) for t, table in enumerate(self.tables)], dim=-2)

    def level(self, t: int, codes: torch.Tensor) -> torch.Tensor:
        """Embeddings of level-t codes (...) -> (..., C)."""
        return self.tables[t](codes)

    def logits(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """Level-t logits of hidden states (..., C) -> (..., V_t)."""
        if self.heads is not None:
            return self.heads[t](h)
        return h @ self.tables[t].weight.T


def user_buckets(user_ids: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Hash user indices into ``num_buckets`` buckets; negative ids (unknown user) get bucket num_buckets.

    A multiplicative (Knuth) hash, fixed so a saved model maps users the same way everywhere.
    """
    h = (user_ids.long() * 2654435761) % (2**32)
    return torch.where(user_ids >= 0, h % num_buckets, torch.full_like(h, num_buckets))


def init_weights(model: nn.Module, num_layers: int) -> None:
    """GPT-2-style initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * max(1, num_layers))
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
