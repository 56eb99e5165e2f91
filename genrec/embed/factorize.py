"""Seeded truncated SVD of a dense or sparse matrix (randomized range finder, Halko et al. 2011).

Used by the attribute and collaborative encoders to turn a large sparse item-by-feature or
item-by-item matrix into a few dense dimensions. The random test matrix comes from a
``torch.Generator`` seeded by the caller, so the result is repeatable and no global RNG moves.
"""

from __future__ import annotations

import torch


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(a, b) if a.is_sparse else a @ b


def truncated_svd(
    matrix: torch.Tensor, rank: int, *, seed: int = 0, oversample: int = 16, power_iters: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [m, r], S [r], V [n, r]) with ``matrix ~ U diag(S) V^T``, r = min(rank, m, n), float64 inside.

    Signs are fixed so that each column of U has a positive largest-magnitude entry: the same
    input gives the same factors, not merely the same subspace.
    """
    m, n = matrix.shape
    r = min(rank, m, n)
    if r < 1:
        raise ValueError(f"cannot factorize a {m} x {n} matrix to rank {rank}")
    a = matrix.coalesce().double() if matrix.is_sparse else matrix.double()
    at = a.t().coalesce() if a.is_sparse else a.t()
    k = min(r + oversample, m, n)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n, k, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(_matmul(a, omega))
    for _ in range(power_iters):  # subspace iteration, re-orthonormalised each half step
        q, _ = torch.linalg.qr(_matmul(at, q))
        q, _ = torch.linalg.qr(_matmul(a, q))
    b = _matmul(at, q).t()  # (k, n) = Q^T A
    u_small, s, vh = torch.linalg.svd(b, full_matrices=False)
    u = q @ u_small[:, :r]
    s, v = s[:r], vh[:r].t()
    flip = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
    flip[flip == 0] = 1
    return u * flip, s, v * flip
