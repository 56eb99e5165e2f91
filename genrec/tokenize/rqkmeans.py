"""RQ-KMeans: residual k-means straight on the embeddings, no network.

Level 0 clusters the embeddings, level 1 the residuals left by level 0's centroids, and so on.
Its codebooks live in the (normalized) embedding space, so the sum of an item's codewords is its
reconstruction.
"""

from __future__ import annotations

import torch

from genrec.tokenize.kmeans import kmeans, nearest_centroid


def residual_kmeans(
    x: torch.Tensor,
    levels: int,
    codebook_size: int,
    *,
    iters: int = 50,
    seed: int = 0,
    backend: str = "auto",
    encode_backend: str = "auto",
) -> torch.Tensor:
    """Codebooks [levels, codebook_size, D] fitted level by level to the residuals of ``x`` [N, D]."""
    return residual_kmeans_codes(
        x, levels, codebook_size, iters=iters, seed=seed, backend=backend, encode_backend=encode_backend
    )[0]


def residual_kmeans_codes(
    x: torch.Tensor,
    levels: int,
    codebook_size: int,
    *,
    iters: int = 50,
    seed: int = 0,
    backend: str = "auto",
    encode_backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebooks [levels, codebook_size, D], codes int64 [N, levels]): :func:`residual_kmeans` and
    the codes its level-by-level assignment gave ``x``, those of ``genrec.ops.rq_encode(x, codebooks)``
    (the same nearest-codeword search on the same float32 residuals), without a second pass."""
    residual = x.detach().float()
    codebooks, codes = [], []
    for level in range(levels):
        centroids = kmeans(
            residual,
            codebook_size,
            iters=iters,
            seed=seed + level,
            backend=backend,
            encode_backend=encode_backend,
        )
        codebooks.append(centroids)
        codes.append(nearest_centroid(residual, centroids, encode_backend))
        residual = residual - centroids[codes[-1]]
    return torch.stack(codebooks), torch.stack(codes, dim=1)
