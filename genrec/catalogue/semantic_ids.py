"""Semantic IDs for items added after training: their codes, and a disambiguation token that is new.

The codes come from the run's own tokenizer (``Tokenizer.encode``, exactly as the catalogue's were
made). The last token must make the ID unique: each new item takes the smallest token that no
existing item and no earlier new item with the same code prefix uses. The model can only emit
tokens below ``level_sizes[-1]``; where a prefix has used them all, the item takes the nearest
prefix that has room (the same codes but the last level's next-nearest codeword,
``Tokenizer.encode_choices``): an ID as close to what the item is as the catalogue allows.
"""

from __future__ import annotations

import numpy as np

from genrec.catalogue.run_encoders import NewItemsError


def assign_new_ids(
    existing: np.ndarray, codes: np.ndarray, level_sizes: list[int], labels: list[str] | None = None
) -> np.ndarray:
    """int64 [n, L + 1]: each new item's codes plus their disambiguation token, given the catalogue's
    semantic IDs ``existing`` [N, L + 1] and the model's ``level_sizes``. ``codes`` is [n, L] (the
    tokenizer's codes), or [n, A, L]: A choices per item, best first (``Tokenizer.encode_choices``),
    of which each item takes the first whose code prefix still has a free disambiguation token: the
    nearest free ID where a crowded prefix has used every token the model can emit. ``labels`` name
    the new items in errors (their ids)."""
    existing = np.asarray(existing, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 2:
        codes = codes[:, None, :]
    L = len(level_sizes) - 1
    if existing.ndim != 2 or existing.shape[1] != L + 1 or codes.ndim != 3 or codes.shape[2] != L:
        raise ValueError(
            f"existing IDs must be [N, {L + 1}] and codes [n, {L}] or [n, A, {L}], got {list(existing.shape)} "
            f"and {list(codes.shape)}"
        )
    n = codes.shape[0]
    labels = labels or [f"new item {i}" for i in range(n)]
    bounds = np.asarray(level_sizes[:L])
    outside = (codes < 0) | (codes >= bounds)
    if outside.any():
        i, choice, level = np.argwhere(outside)[0]
        raise NewItemsError(
            f"{labels[i]}: code {int(codes[i, choice, level])} at level {int(level)} is outside the model's "
            f"vocabulary ({int(bounds[level])}); the tokenizer and the model disagree"
        )
    flat = codes.reshape(-1, L)
    used: dict[tuple[int, ...], set[int]] = {tuple(p): set() for p in flat.tolist()}
    if len(existing) and used:
        # Only the prefixes the new items may take matter: find the existing rows that share one.
        row = np.dtype((np.void, existing.dtype.itemsize * L))
        hit = np.isin(
            np.ascontiguousarray(existing[:, :L]).view(row).ravel(),
            np.ascontiguousarray(flat).view(row).ravel(),
        )
        for *prefix, token in existing[hit].tolist():
            used[tuple(prefix)].add(token)
    limit = int(level_sizes[-1])
    out = np.empty((n, L + 1), dtype=np.int64)
    for i, choices in enumerate(codes.tolist()):
        for prefix in choices:
            taken = used[tuple(prefix)]
            token = next(t for t in range(len(taken) + 1) if t not in taken)
            if token < limit:
                break
        else:
            first = tuple(choices[0])
            also = f" nor any of its {len(choices) - 1} nearest alternatives" if len(choices) > 1 else ""
            raise NewItemsError(
                f"{labels[i]}: its codes {first} are already shared by {len(used[first])} item(s), using every "
                f"disambiguation token the model can generate (0..{limit - 1}){also}; it cannot get a unique "
                "semantic ID without retraining (a tokenizer with more levels or codes gives fewer collisions)"
            )
        taken.add(token)
        out[i, :L] = prefix
        out[i, L] = token
    return out


__all__ = ["assign_new_ids"]
