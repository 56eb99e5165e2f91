"""The multimodal encoder's networks and losses: the content fusion (per-modality projections and a
masked attention pool with a learned "nothing" token), the alignment head into collaborative
space, symmetric InfoNCE, and modality dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContentFusion(nn.Module):
    """Content modalities -> one embedding of width ``dim``: projections, then masked attention pooling."""

    def __init__(self, dims: dict[str, int], dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.names = list(dims)
        self.proj = nn.ModuleDict(
            {
                name: nn.Sequential(
                    nn.LayerNorm(d),
                    nn.Linear(d, hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, dim),
                )
                for name, d in dims.items()
            }
        )
        self.kind = nn.Parameter(torch.randn(len(dims) + 1, dim) * 0.02)  # one per modality, then "nothing"
        self.nothing = nn.Parameter(torch.zeros(dim))
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, features: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """features[name] (B, D_name), mask (B, M) bool in ``self.names`` order -> (B, dim)."""
        tokens = [self.proj[name](features[name]) for name in self.names]
        tokens.append(self.nothing.expand_as(tokens[0]))
        z = torch.stack(tokens, dim=1) + self.kind  # (B, M + 1, dim)
        keep = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # "nothing" is always a candidate
        weights = self.score(z).squeeze(-1).masked_fill(~keep, float("-inf")).softmax(dim=1)
        return self.out((weights.unsqueeze(-1) * z).sum(dim=1))


class AlignmentHead(nn.Module):
    """Fused content -> collaborative space (the content-only estimate of an item's behaviour)."""

    def __init__(self, dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of row-aligned pairs (a_i, b_i), the other rows as negatives."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def modality_dropout(mask: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``mask`` with each present entry hidden with probability p; a row keeps at least one it had."""
    if p <= 0:
        return mask
    noise = torch.rand(mask.shape, generator=generator)
    kept = mask & (noise >= p)
    empty = ~kept.any(dim=1) & mask.any(dim=1)
    if empty.any():
        pick = (noise * mask).argmax(dim=1)  # one present modality per emptied row
        kept[empty, pick[empty]] = True
    return kept
