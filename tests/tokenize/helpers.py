"""Synthetic data for the tokenizer tests."""

from __future__ import annotations

import numpy as np


def hierarchical_clusters(
    coarse: int,
    fine: int,
    per_group: int,
    dim: int,
    seed: int,
    *,
    spread: float = 10.0,
    fine_ratio: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points x = A[i] + B[j] + noise with |A| > |B| >> noise: (x [N, dim], i [N], j [N]);
    ``fine_ratio`` is |B| / |A|.

    Residual quantization should recover i at level 0 and j at level 1.
    """
    rng = np.random.default_rng(seed)
    a = separated_points(rng, coarse, dim, spread)
    b = separated_points(rng, fine, dim, spread * fine_ratio)
    i = np.repeat(np.arange(coarse), fine * per_group)
    j = np.tile(np.repeat(np.arange(fine), per_group), coarse)
    x = a[i] + b[j] + rng.normal(size=(len(i), dim)) * spread / 200
    order = rng.permutation(len(i))
    return x[order].astype(np.float32), i[order], j[order]


def same_partition(labels: np.ndarray, codes: np.ndarray) -> bool:
    """True when ``codes`` splits the items exactly like ``labels`` (up to renaming)."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    codes = np.asarray(codes).reshape(len(codes), -1)
    pairs = {(tuple(a), tuple(b)) for a, b in zip(labels, codes, strict=True)}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def separated_points(rng: np.random.Generator, count: int, dim: int, scale: float) -> np.ndarray:
    """``count`` random points of norm about ``scale`` whose pairwise distances are all >= ``scale``."""
    points: list[np.ndarray] = []
    while len(points) < count:
        p = rng.normal(size=dim) * scale
        if all(np.linalg.norm(p - q) >= scale for q in points):
            points.append(p)
    return np.array(points).reshape(count, dim)
