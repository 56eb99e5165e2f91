"""The reference of ``dropout_multiplier``: splitmix64 in torch's int64 arithmetic.

torch's int64 multiply and add wrap modulo 2^64, as the kernel's uint64 ones do; its right shift
is arithmetic, so the sign bits it copies in are masked off to give the kernel's logical shift.
"""

from __future__ import annotations

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def dropout_threshold(p: float) -> int:
    """Elements whose 24-bit draw is below this are dropped: P(drop) = threshold / 2^24."""
    return round(p * (1 << 24))


def splitmix64_draws(seed: int, n: int, device=None) -> torch.Tensor:
    """int64 [n]: the bits of outputs 0..n-1 of splitmix64 started at ``seed`` (an int64)."""
    i = torch.arange(1, n + 1, dtype=torch.int64, device=device)
    z = i * _signed(_GOLDEN) + _signed(seed % (1 << 64))
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    return z ^ _shift_right(z, 31)


def dropout_multiplier_reference(like: torch.Tensor, seed: int, p: float) -> torch.Tensor:
    """0 (dropped) or 1 / (1 - p) (kept), contiguous, shaped and typed like ``like``."""
    top24 = _shift_right(splitmix64_draws(seed, like.numel(), like.device), 40)
    keep = (top24 >= dropout_threshold(p)).reshape(like.shape)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float64).to(like.dtype)
    return keep.to(like.dtype) * scale.to(like.device)
