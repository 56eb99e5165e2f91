"""Semantic IDs for items added after training: their codes, and a disambiguation token that is new.

The codes come from the run's own tokenizer (``Tokenizer.encode``, exactly as the catalogue's were
made). The last token must make the ID unique: each new item takes the smallest token that no
existing item and no earlier new item with the same code prefix uses. The model can only emit
tokens below ``level_sizes[-1]``; a prefix that has used them all cannot take another item.
"""

from __future__ import annotations

import numpy as np

from genrec.catalogue.run_encoders import NewItemsError


def assign_new_ids(
    existing: np.ndarray, codes: np.ndarray, level_sizes: list[int], labels: list[str] | None = None
) -> np.ndarray:
    """int64 [n, L + 1]: ``codes`` [n, L] (new items, in order) plus their disambiguation token,
    given the catalogue's semantic IDs ``existing`` [N, L + 1] and the model's ``level_sizes``.
    ``labels`` name the new items in errors (their ids)."""
    existing = np.asarray(existing, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    L = len(level_sizes) - 1
    if existing.ndim != 2 or existing.shape[1] != L + 1 or codes.ndim != 2 or codes.shape[1] != L:
        raise ValueError(
            f"existing IDs must be [N, {L + 1}] and codes [n, {L}], got {list(existing.shape)} and {list(codes.shape)}"
        )
    labels = labels or [f"new item {i}" for i in range(len(codes))]
    bounds = np.asarray(level_sizes[:L])
    outside = (codes < 0) | (codes >= bounds)
    if outside.any():
        i, level = np.argwhere(outside)[0]
        raise NewItemsError(
            f"{labels[i]}: code {int(codes[i, level])} at level {int(level)} is outside the model's vocabulary "
            f"({int(bounds[level])}); the tokenizer and the model disagree"
        )
    used: dict[tuple[int, ...], set[int]] = {tuple(p): set() for p in codes.tolist()}
    if len(existing) and used:
        # Only the prefixes the new items fall on matter: find the existing rows that share one.
        row = np.dtype((np.void, existing.dtype.itemsize * L))
        hit = np.isin(
            np.ascontiguousarray(existing[:, :L]).view(row).ravel(),
            np.ascontiguousarray(codes).view(row).ravel(),
        )
        for *prefix, token in existing[hit].tolist():
            used[tuple(prefix)].add(token)
    limit = int(level_sizes[-1])
    out = np.empty((len(codes), L + 1), dtype=np.int64)
    for i, prefix in enumerate(codes.tolist()):
        taken = used[tuple(prefix)]
        token = next(t for t in range(len(taken) + 1) if t not in taken)
        if token >= limit:
            raise NewItemsError(
                f"{labels[i]}: its codes {tuple(prefix)} are already shared by {len(taken)} item(s), using every "
                f"disambiguation token the model can generate (0..{limit - 1}); it cannot get a unique semantic ID "
                "without retraining (a tokenizer with more levels or codes gives fewer collisions)"
            )
        taken.add(token)
        out[i, :L] = prefix
        out[i, L] = token
    return out


__all__ = ["assign_new_ids"]
