"""Residual-quantization encoding in plain PyTorch."""

from __future__ import annotations

import torch

# Rows per chunk, so that the [rows, K] distance matrix stays small for any N.
_CHUNK_ROWS = 1 << 16


def rq_encode_reference(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """Codes [N, L] (int64): per level, the nearest codeword to the residual (ties: smallest k).

    Half-precision inputs are computed in float32, float64 inputs in float64.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    cb = codebooks.to(compute)
    norms = cb.pow(2).sum(-1)  # (L, K)
    codes = torch.empty(x.shape[0], cb.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        r = x[start : start + _CHUNK_ROWS].to(compute)  # (n, D)
        for level in range(cb.shape[0]):
            dist = r.pow(2).sum(1, keepdim=True) - 2 * r @ cb[level].T + norms[level]  # (n, K)
            idx = dist.argmin(dim=1)  # first minimum: the smallest k among ties
            codes[start : start + _CHUNK_ROWS, level] = idx
            r = r - cb[level, idx]
    return codes
