"""Content similarity to a history: the fusion's knowledge of what items are, cold or warm.

A history's *profile* is the recency-weighted mean of its last PROFILE_ITEMS items' embeddings
(weights PROFILE_DECAY ** age), and an item's similarity to the history is the cosine of its
embedding to the profile: the content-KNN baseline's score (genrec.eval.content_knn), which ranks
an item nobody has interacted with by what it is. genrec.fusion adds it to every candidate's
score (a weight chosen on validation) and takes each history's most similar items as candidates.

Which embeddings: ``model.profile_embeddings`` ("text": the text encoder's, "content": the embed
stage's). A run keeps them in RUN/similarity.safetensors, so it recommends (and takes items added
after training, genrec.catalogue) without the embed stage's cache.

Scoring is chunked, so memory stays bounded by a few million floats per block whatever the
catalogue size: no users x items matrix is held whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

#: The values the content-KNN baseline chose on Beauty's validation split (bench/results/content-knn-beauty).
PROFILE_ITEMS = 10
PROFILE_DECAY = 0.4
#: Where a run folder keeps its profile embeddings.
SIMILARITY_FILE = "similarity.safetensors"
#: Floats one block of scores may hold (users x items, or users x candidates x width).
BLOCK = 1 << 22
SOURCES = ("text", "content")


class ProfileSimilarity:
    """Item embeddings [N, d] (rows made unit length; an all-zero row, an item without content,
    stays zero and is similar to nothing) and the cosine of items to histories' profiles."""

    def __init__(self, rows, source: str, *, unit: bool = False, text_spec: dict | None = None) -> None:
        rows = torch.as_tensor(np.asarray(rows, dtype=np.float32))
        if rows.dim() != 2 or not bool(torch.isfinite(rows).all()):
            raise ValueError(
                f"profile embeddings must be a finite [items, dim] array, got shape {tuple(rows.shape)}"
            )
        # unit: rows this class normalised before (a saved file): normalising again would move
        # them by a rounding step, and a loaded run must rank exactly as the run that saved it.
        self.rows = rows if unit else rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
        self.source = source
        # For source "text": the text encoder's saved settings (genrec.embed.text), so that items
        # added after training are embedded exactly as these rows were.
        self.text_spec = text_spec
        self._on: dict[str, torch.Tensor] = {}

    @property
    def num_items(self) -> int:
        return int(self.rows.shape[0])

    def _rows(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._on:
            self._on[key] = self.rows.to(device)
        return self._on[key]

    def profiles(self, histories: Sequence[np.ndarray], device) -> torch.Tensor:
        """[U, d]: each history's unit profile (zero for an empty history)."""
        rows = self._rows(device)
        users, items, weights = [], [], []
        for r, h in enumerate(histories):
            recent = np.asarray(h, dtype=np.int64)[-PROFILE_ITEMS:]
            users.append(np.full(len(recent), r, dtype=np.int64))
            items.append(recent)
            weights.append(PROFILE_DECAY ** np.arange(len(recent), dtype=np.float64)[::-1])
        cat = np.concatenate
        u = torch.as_tensor(cat(users) if users else np.zeros(0, np.int64), device=device)
        i = torch.as_tensor(cat(items) if items else np.zeros(0, np.int64), device=device)
        w = torch.as_tensor(cat(weights) if weights else np.zeros(0), dtype=torch.float32, device=device)
        profile = torch.zeros(len(histories), rows.shape[1], device=device)
        profile.index_add_(0, u, rows[i] * w[:, None])
        return profile / profile.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def of(self, profiles: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[U, M] float32: the cosine of each candidate ``items`` [U, M] (-1: an empty slot, 0) to
        its user's profile."""
        rows = self._rows(profiles.device)
        U, M = items.shape
        out = torch.zeros(U, M, device=profiles.device)
        step = max(1, BLOCK // max(1, M * rows.shape[1]))
        for lo in range(0, U, step):
            it = items[lo : lo + step]
            got = torch.einsum("umd,ud->um", rows[it.clamp(min=0)], profiles[lo : lo + step])
            out[lo : lo + step] = got.masked_fill(it < 0, 0.0)
        return out

    def best(
        self,
        profiles: torch.Tensor,
        m: int,
        exclude: Sequence[np.ndarray] | None = None,
        among: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[U, m] int64: each user's m most similar items (best first; ties: the lower index), -1
        where fewer qualify. ``among``: only these item indices (e.g. the cold items); ``exclude``:
        per user, items never to return (the history)."""
        device = profiles.device
        rows = self._rows(device)
        # Ascending indices, so that "the lower index first" is "the earlier column first".
        pool = (
            torch.arange(rows.shape[0], device=device)
            if among is None
            else torch.unique(among.to(device).long())
        )
        U = profiles.shape[0]
        m = min(int(m), len(pool))
        best_s = torch.full((U, m), float("-inf"), device=device)
        best_i = torch.full((U, m), -1, dtype=torch.long, device=device)
        if m == 0 or U == 0:
            return best_i
        ex_users = ex_items = None
        if exclude is not None:
            ex_users = np.repeat(np.arange(len(exclude)), [len(h) for h in exclude])
            ex_items = np.concatenate([np.asarray(h, np.int64) for h in exclude] or [np.zeros(0, np.int64)])
            position = np.full(rows.shape[0], -1, dtype=np.int64)  # each item's column in the pool
            position[pool.cpu().numpy()] = np.arange(len(pool))
            ex_cols = position[ex_items]
            keep = ex_cols >= 0
            ex_users, ex_cols = ex_users[keep], ex_cols[keep]
        step = max(m, BLOCK // max(1, U))
        for lo in range(0, len(pool), step):
            ids = pool[lo : lo + step]
            block = profiles @ rows[ids].T
            if ex_users is not None:
                inside = (ex_cols >= lo) & (ex_cols < lo + len(ids))
                if inside.any():
                    r = torch.as_tensor(ex_users[inside], device=device)
                    c = torch.as_tensor(ex_cols[inside] - lo, device=device)
                    block[r, c] = float("-inf")
            # Earlier blocks hold lower indices: putting them first keeps the lower index on ties.
            s = torch.cat([best_s, block], dim=1)
            i = torch.cat([best_i, ids[None, :].expand(U, -1)], dim=1)
            order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :m]
            best_s, best_i = s.gather(1, order), i.gather(1, order)
        return best_i.masked_fill(torch.isinf(best_s), -1)

    def extended(self, rows) -> ProfileSimilarity:
        """These embeddings with ``rows`` (new items) appended."""
        new = ProfileSimilarity(rows, self.source).rows
        return ProfileSimilarity(
            torch.cat([self.rows, new]), self.source, unit=True, text_spec=self.text_spec
        )


def save_similarity(path: Path, sim: ProfileSimilarity) -> None:
    """The embeddings as safetensors (source in the metadata), written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {"source": json.dumps(sim.source)}
    if sim.text_spec is not None:
        metadata["text_spec"] = json.dumps(sim.text_spec)
    save_file({"rows": sim.rows.contiguous()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_similarity(path: Path, num_items: int) -> ProfileSimilarity:
    """What :func:`save_similarity` wrote; a missing, damaged or mismatched file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run ranks with profile similarity")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            source = json.loads(metadata["source"])
            text_spec = json.loads(metadata["text_spec"]) if "text_spec" in metadata else None
            rows = f.get_tensor("rows")
        if text_spec is not None and not isinstance(text_spec, dict):
            raise TypeError("text_spec must be a JSON object")
        sim = ProfileSimilarity(rows, source, unit=True, text_spec=text_spec)
    except (SafetensorError, KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid profile embeddings ({e})") from None
    if sim.num_items != num_items:
        raise ValueError(f"{path}: embeddings of {sim.num_items} items, the run has {num_items}")
    return sim
