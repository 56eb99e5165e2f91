"""Scaling embeddings before quantization, with the statistics kept to encode new items later."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NORMALIZE_MODES = ("l2", "standardize", "none")


@dataclass
class Normalizer:
    """``mode`` "l2": rows scaled to unit length; "standardize": (x - mean) / scale per dimension."""

    mode: str
    mean: torch.Tensor
    """[D] (zeros unless standardizing)."""
    scale: torch.Tensor
    """[D] (ones unless standardizing)."""

    @classmethod
    def fit(cls, x: torch.Tensor, mode: str) -> Normalizer:
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")
        d = x.shape[1]
        if mode == "standardize":
            mean = x.mean(0)
            # Constant dimensions keep scale 1 instead of dividing by zero.
            std = x.std(0, correction=0)
            scale = torch.where(std > 1e-12, std, torch.ones_like(std))
            return cls(mode, mean, scale)
        return cls(mode, x.new_zeros(d), x.new_ones(d))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "l2":
            return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.mode == "standardize":
            return (x - self.mean.to(x.device)) / self.scale.to(x.device)
        return x
