"""Semantic IDs from codes: a disambiguation token makes every item's ID unique."""

from __future__ import annotations

import numpy as np


class CodebookOverflowError(ValueError):
    """More items share one code tuple than the disambiguation level can tell apart."""


def row_keys(codes: np.ndarray) -> np.ndarray | None:
    """int64 [N]: one number per row of non-negative ``codes`` [N, L] that sorts as the rows do
    (mixed radix, the column's largest code + 1 per digit), or None where the codes do not fit
    in 63 bits. Sorting numbers is many times faster than ``np.unique(axis=0)``'s row sort."""
    if codes.shape[0] == 0 or codes.shape[1] == 0 or codes.min() < 0:
        return None
    radices = [int(r) + 1 for r in codes.max(axis=0)]
    if int(np.prod([float(r) for r in radices])) >= 2**62:
        return None
    keys = np.zeros(codes.shape[0], dtype=np.int64)
    for column, radix in enumerate(radices):
        keys = keys * radix + codes[:, column]
    return keys


def collision_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group [N], sizes [G]): the index of each item's code tuple among the distinct tuples
    (in lexicographic order), and how many items hold each tuple."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [num_items, levels], got shape {codes.shape}")
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = row_keys(codes.astype(np.int64, copy=False))
    if keys is None:
        _, group, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    else:
        _, group, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    return group.reshape(-1).astype(np.int64), sizes.astype(np.int64)


def disambiguate(codes: np.ndarray, max_token: int, priority: np.ndarray | None = None) -> np.ndarray:
    """Semantic IDs int64 [N, L + 1]: ``codes`` [N, L] plus a last column numbering the items that
    share a code tuple 0, 1, 2, ... (0 for items whose codes are unique): by descending
    ``priority`` [N] where given (e.g. training interactions, so that token 0 means "the most
    popular item of its group" in every group, something a model can learn), then by item index.

    Raises :class:`CodebookOverflowError` when a group is larger than ``max_token`` (the
    codebook size), since the last token must stay within the same vocabulary bound.

    >>> disambiguate(np.array([[1, 2], [0, 0], [1, 2]]), 256).tolist()
    [[1, 2, 0], [0, 0, 0], [1, 2, 1]]
    """
    codes = np.asarray(codes, dtype=np.int64)
    group, sizes = collision_groups(codes)
    if len(sizes) and sizes.max() > max_token:
        worst = int(sizes.argmax())
        members = np.flatnonzero(group == worst)
        shown = ", ".join(str(i) for i in members[:8]) + (", ..." if len(members) > 8 else "")
        raise CodebookOverflowError(
            f"{int(sizes[worst])} items share the codes {tuple(int(c) for c in codes[members[0]])} "
            f"(items {shown}), but the disambiguation token holds at most codebook_size={max_token} "
            "values. Raise tokenize.codebook_size or tokenize.levels, train the RQ-VAE longer, or "
            "check the embeddings for near-duplicate items."
        )
    if priority is None:  # a stable sort by group keeps item-index order inside each group
        order = np.argsort(group, kind="stable")
    else:
        priority = np.asarray(priority)
        if priority.shape != (len(codes),):
            raise ValueError(
                f"priority must have one value per item ({len(codes)}), got shape {priority.shape}"
            )
        order = np.lexsort((np.arange(len(codes)), -priority.astype(np.float64), group))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else np.zeros(0, dtype=np.int64)
    token = np.empty(len(codes), dtype=np.int64)
    token[order] = np.arange(len(codes)) - starts[group[order]]
    return np.concatenate([codes, token[:, None]], axis=1)
