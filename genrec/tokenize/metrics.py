"""Quality of a tokenization: codebook usage and perplexity per level, collisions, reconstruction."""

from __future__ import annotations

import numpy as np
import torch

from genrec.tokenize.semantic_ids import collision_groups

CHUNK_ROWS = 1 << 16
"""Rows per step of the reconstruction sums: float64 copies of a million rows cost gigabytes."""


def level_usage(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: codes used (count and fraction of ``codebook_size``), perplexity of the code
    distribution (exp of its entropy; ``codebook_size`` when every code is equally used) and the
    share of items on the most used code."""
    codes = np.asarray(codes)
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size).astype(np.float64)
        p = counts[counts > 0] / max(counts.sum(), 1)
        out.append(
            {
                "level": level,
                "codes_used": int((counts > 0).sum()),
                "usage": float((counts > 0).sum() / codebook_size),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())) if len(p) else 0.0,
                "largest_code_share": float(counts.max() / max(counts.sum(), 1)),
            }
        )
    return out


def collision_stats(codes: np.ndarray) -> dict:
    """How many items share their full code tuple with another item, before disambiguation."""
    codes = np.asarray(codes)
    n = len(codes)
    _, sizes = collision_groups(codes)
    colliding = int(sizes[sizes > 1].sum())
    return {
        "items": n,
        "unique_codes": len(sizes),
        "colliding_items": colliding,
        "collision_rate": colliding / n if n else 0.0,
        "collision_groups": int((sizes > 1).sum()),
        "largest_collision_group": int(sizes.max()) if len(sizes) else 0,
        # Distinct prefixes per depth: how finely each level splits the catalogue.
        "distinct_prefixes": [len(collision_groups(codes[:, : d + 1])[1]) for d in range(codes.shape[1])],
    }


def reconstruction_error(x: torch.Tensor, reconstruction: torch.Tensor) -> dict:
    """Mean squared error per item (summed over dimensions) and the fraction of the data's
    variance it leaves unexplained (0 is perfect, 1 is no better than the mean item)."""
    return summarize_errors(squared_errors(x, reconstruction), total_variance(x))


def squared_errors(x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """float64 [N]: each item's squared error, summed over dimensions (in float64, by chunks)."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        out[rows] = (x[rows].double() - reconstruction[rows].double()).pow(2).sum(1)
    return out


def total_variance(x: torch.Tensor) -> float:
    """Sum over items of the squared distance to the mean item, in float64."""
    mean = sum(x[s : s + CHUNK_ROWS].double().sum(0) for s in range(0, x.shape[0], CHUNK_ROWS)) / max(
        x.shape[0], 1
    )
    return float(
        sum((x[s : s + CHUNK_ROWS].double() - mean).pow(2).sum() for s in range(0, x.shape[0], CHUNK_ROWS))
    )


def summarize_errors(errors: torch.Tensor, variance: float) -> dict:
    """:func:`reconstruction_error`'s summary of per-item ``errors`` given :func:`total_variance`."""
    return {
        "mse": float(errors.mean()),
        "relative_error": float(errors.sum() / max(variance, 1e-30)),
    }


def token_metrics(codes: np.ndarray, semantic_ids: np.ndarray, codebook_size: int) -> dict:
    """Usage per level, collisions before disambiguation, and the size of the disambiguation level."""
    usage = level_usage(codes, codebook_size)
    return {
        "levels": usage,
        "min_level_usage": min((u["usage"] for u in usage), default=0.0),
        "collisions": collision_stats(codes),
        "disambiguation_level_size": int(semantic_ids[:, -1].max()) + 1 if len(semantic_ids) else 1,
    }
