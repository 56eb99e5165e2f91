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
    residual = x.detach().float()
    codebooks = []
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
        residual = residual - centroids[nearest_centroid(residual, centroids, encode_backend)]
    return torch.stack(codebooks)
