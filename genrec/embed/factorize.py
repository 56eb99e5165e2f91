"""Seeded truncated SVD of a dense or sparse matrix (randomized range finder, Halko et al. 2011).

Used by the attribute and collaborative encoders to turn a large sparse item-by-feature or
item-by-item matrix into a few dense dimensions. The random test matrix comes from a
``torch.Generator`` seeded by the caller, so the result is repeatable and no global RNG moves.

The large products run in float32 on a CSR matrix (multi-threaded, linear in the non-zeros):
a million-row matrix with 20 M non-zeros factorizes in under a minute on two cores. Only the
small (k x n) problem at the end is solved in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def _torch_csr(m) -> torch.Tensor:
    """A scipy CSR matrix as a float32 torch CSR tensor (index arrays shared where their type allows)."""
    index = torch.int32 if max(m.shape[1], m.nnz) < 2**31 else torch.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr).to(index),
            torch.from_numpy(m.indices).to(index),
            torch.from_numpy(m.data).float(),  # no copy when float32 already
            m.shape,
            check_invariants=False,  # scipy built it; checking costs a pass over the non-zeros
        )


def _operands(matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, A^T) in float32: CSR tensors for a sparse ``matrix`` (torch COO/CSR or scipy), else dense."""
    if hasattr(matrix, "tocsr"):  # scipy.sparse
        m = matrix.tocsr().astype(np.float32)  # before the transpose: half its copy
        return _torch_csr(m), _torch_csr(m.T.tocsr())
    if matrix.is_sparse or matrix.layout == torch.sparse_csr:
        import scipy.sparse as sp

        coo = matrix.to_sparse_coo().coalesce()
        (i, j), v = coo.indices().numpy(), coo.values().double().numpy()
        return _operands(sp.csr_matrix((v, (i, j)), shape=tuple(coo.shape), dtype=np.float64))
    a = matrix.float()
    return a, a.t()


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def _orthonormal(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x).Q


def truncated_svd(
    matrix: torch.Tensor, rank: int, *, seed: int = 0, oversample: int = 16, power_iters: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U [m, r], S [r], V [n, r]) float32 with ``matrix ~ U diag(S) V^T``, r = min(rank, m, n).

    ``matrix``: a dense tensor, a sparse COO or CSR tensor, or a scipy sparse matrix. Signs are
    fixed so that each column of U has a positive largest-magnitude entry: the same input gives
    the same factors, not merely the same subspace.
    """
    m, n = matrix.shape
    r = min(rank, m, n)
    if r < 1:
        raise ValueError(f"cannot factorize a {m} x {n} matrix to rank {rank}")
    a, at = _operands(matrix)
    k = min(r + oversample, m, n)
    gen = torch.Generator().manual_seed(int(seed))
    # Drawn in float64 as before (the same test matrix, so the same factors up to float32 rounding).
    omega = torch.randn(n, k, generator=gen, dtype=torch.float64).float()
    q = _orthonormal(_matmul(a, omega))
    for _ in range(power_iters):  # subspace iteration, re-orthonormalised each half step
        q = _orthonormal(_matmul(at, q))
        q = _orthonormal(_matmul(a, q))
    # B = Q^T A (k x n) through a QR of its tall transpose, B^T = Q_b R_b: then B = R_b^T Q_b^T and
    # only the k x k matrix R_b^T needs an SVD (in float64); a LAPACK SVD of the wide B itself
    # takes seconds per hundred thousand columns.
    q_b, r_b = torch.linalg.qr(_matmul(at, q))
    u_small, s, wh = torch.linalg.svd(r_b.t().double())
    u = q @ u_small[:, :r].float()
    s, v = s[:r].float(), q_b @ wh[:r].t().float()
    flip = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
    flip[flip == 0] = 1
    return u * flip, s, v * flip
