"""Codes that fit the disambiguation token: items of an overflowing cell move to the nearest free one.

A semantic ID is an item's L codes plus a disambiguation token below ``max_token``, so one code
tuple (a *cell*) holds at most ``max_token`` items. At catalogue scale residual k-means leaves
cells far larger than that (491 items on one 3-level code at 1M items). Instead of failing,
:func:`fit_to_capacity` moves the overflow, level by level from the top:

- A cell at depth ``l`` (a prefix of ``l + 1`` codes) holds at most ``max_token * K**(L-1-l)`` items
  (K codes per level). Where one holds more, its items farthest from the cell's codeword move
  first (their level-``l`` residual's distance; ties: the lower item index moves first) until it
  holds exactly that many.
- The movers, in that same order over the whole level (farthest first, ties by lower index), each
  take the nearest codeword of their level that still has room under the same parent prefix
  (nearest to their residual; ties: the lower codeword index), and get the levels below
  re-encoded greedily from the new residual.

At the last level this is exactly ``Tokenizer.encode_choices``' order: a moved item's ID is the
first of its choices whose cell had room, which is how ``genrec add-items`` places a new item.
Upper levels only move when a whole prefix is fuller than its subtree (never seen in practice);
each level's moves leave every cell within its capacity, so the next level always finds room.
Only a catalogue larger than the whole space (``max_token * K**L`` items) cannot fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import genrec.ops
from genrec.tokenize.semantic_ids import CodebookOverflowError, collision_groups

CHUNK_ROWS = 1 << 16
"""Rows per distance matrix [rows, K]: bounds the memory of large overflowing cells."""


@dataclass
class CapacityFit:
    codes: np.ndarray
    """int64 [N, L]: every cell holds at most ``max_token`` items."""
    moved: np.ndarray
    """int64 [M]: the items whose codes changed, ascending."""
    moved_per_level: list[int]
    """How many items moved out of an overflowing cell at each level."""
    largest_cell_before: int
    """The most items on one code tuple before moving."""
    capacity: int
    """``max_token``: the most items one code tuple may hold."""

    def report(self) -> dict:
        """The summary metrics.json keeps (``overflow``)."""
        return {
            "cell_capacity": self.capacity,
            "largest_cell_before": self.largest_cell_before,
            "moved_items": len(self.moved),
            "moved_per_level": self.moved_per_level,
        }


def last_level_distances(residual: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """float32 [N, K]: distances of the residuals [N, D] to the codewords [K, D]. One function for
    :func:`fit_to_capacity` and ``Tokenizer.encode_choices``, so both order choices alike."""
    return torch.cdist(residual.float(), book.float())


def choice_order(distances: torch.Tensor) -> torch.Tensor:
    """int64 [N, K]: codewords nearest first; ties go to the lower index."""
    return torch.sort(distances, dim=1, stable=True).indices


def fit_to_capacity(
    codes: np.ndarray,
    latents: torch.Tensor,
    codebooks: torch.Tensor,
    max_token: int,
    *,
    encode_backend: str = "auto",
) -> CapacityFit:
    """``codes`` [N, L] (greedy residual codes of ``latents`` [N, D] on ``codebooks`` [L, K, D])
    changed as little as the rule in the module docstring needs for every code tuple to hold at
    most ``max_token`` items; ``codes`` itself is left as it is.

    Raises :class:`CodebookOverflowError` when N exceeds the whole space, ``max_token * K**L``.
    """
    codes = np.array(codes, dtype=np.int64, copy=True)
    n, levels = codes.shape
    k = codebooks.shape[1]
    if codebooks.shape[0] != levels or latents.shape[0] != n:
        raise ValueError(
            f"codes {list(codes.shape)}, latents {list(latents.shape)} and codebooks "
            f"{list(codebooks.shape)} do not agree"
        )
    space = max_token * k**levels  # a Python int: no overflow
    if n > space:
        raise CodebookOverflowError(
            f"{n} items, but levels={levels} of codebook_size={k} codes and a disambiguation token "
            f"below {max_token} give only {space} distinct semantic IDs: the whole code space is full. "
            "Raise tokenize.codebook_size or tokenize.levels."
        )
    leaf = collision_groups(codes)[1]
    largest = int(leaf.max()) if n else 0
    moved_per_level = [0] * levels
    original = codes.copy() if largest > max_token else codes
    if largest > max_token:  # otherwise nothing moves: the IDs are today's, to the byte
        parent = np.zeros(n, dtype=np.int64)
        for level in range(levels):
            cap = min(max_token * k ** (levels - 1 - level), n)
            child = parent * k + codes[:, level]
            moved_per_level[level] = _move_overflow(
                codes, child, latents, codebooks, level, cap, encode_backend
            )
            parent = np.unique(parent * k + codes[:, level], return_inverse=True)[1].reshape(-1)
    moved = np.flatnonzero((codes != original).any(axis=1))
    return CapacityFit(codes, moved, moved_per_level, largest, max_token)


def _residuals(
    rows: np.ndarray, codes: np.ndarray, latents: torch.Tensor, codebooks: torch.Tensor, level: int
) -> torch.Tensor:
    """float32 [len(rows), D]: the input of ``level`` for these items, subtracted level by level
    in float32 exactly as ``Tokenizer.encode_choices`` does."""
    index = torch.from_numpy(rows).to(latents.device)
    residual = latents[index].float()
    prefix = torch.from_numpy(codes[rows, :level]).to(latents.device)
    for m in range(level):
        residual = residual - codebooks[m, prefix[:, m]].float()
    return residual


def _move_overflow(
    codes: np.ndarray,
    child: np.ndarray,
    latents: torch.Tensor,
    codebooks: torch.Tensor,
    level: int,
    cap: int,
    encode_backend: str,
) -> int:
    """Move the overflow of every depth-``level`` cell (``child``: a key per item, parent * K + code)
    within its parent; updates ``codes`` in place and returns how many items moved."""
    keys, cell, counts = np.unique(child, return_inverse=True, return_counts=True)
    cell = cell.reshape(-1)
    if counts.max() <= cap:
        return 0
    k = codebooks.shape[1]
    members = np.flatnonzero(counts[cell] > cap)
    own = np.empty(len(members), dtype=np.float32)
    for start in range(0, len(members), CHUNK_ROWS):
        rows = members[start : start + CHUNK_ROWS]
        distance = last_level_distances(_residuals(rows, codes, latents, codebooks, level), codebooks[level])
        own[start : start + len(rows)] = (
            distance.gather(1, torch.from_numpy(codes[rows, level : level + 1]).to(distance.device))
            .reshape(-1)
            .cpu()
            .numpy()
        )
    # Farthest from the cell's codeword first, ties by lower item index: the first
    # (count - cap) of each crowded cell move.
    order = np.lexsort((members, -own, cell[members]))
    ranked_cells = cell[members[order]]
    first_of_cell = np.searchsorted(ranked_cells, ranked_cells, side="left")
    position = np.arange(len(order)) - first_of_cell
    leaving = position < counts[ranked_cells] - cap
    movers, mover_own = members[order][leaving], own[order][leaving]
    turn = np.lexsort((movers, -mover_own))  # the same rule orders the movers' turns
    movers = movers[turn]

    room = cap - counts  # per existing cell; the crowded ones end at exactly cap
    np.add.at(room, cell[movers], 1)
    fresh: dict[int, int] = {}  # room left in cells that held nobody before
    parent_key = child[movers] // k
    for start in range(0, len(movers), CHUNK_ROWS):
        rows = movers[start : start + CHUNK_ROWS]
        residual = _residuals(rows, codes, latents, codebooks, level)
        order_k = choice_order(last_level_distances(residual, codebooks[level])).cpu().numpy()
        chosen = np.empty(len(rows), dtype=np.int64)
        for i, choices in enumerate(order_k):
            candidates = parent_key[start + i] * k + choices
            at = np.minimum(np.searchsorted(keys, candidates), len(keys) - 1)
            known = keys[at] == candidates
            j = _first_with_room(candidates, known, room[at], fresh, cap)
            if j is None:  # each level leaves every parent within its capacity
                raise AssertionError(f"no room under the prefix of item {int(rows[i])} at level {level}")
            chosen[i] = choices[j]
            if known[j]:
                room[at[j]] -= 1
            else:
                fresh[int(candidates[j])] = fresh.get(int(candidates[j]), cap) - 1
        codes[rows, level] = chosen
        if level + 1 < codes.shape[1]:
            moved_on = residual - codebooks[level, torch.from_numpy(chosen).to(residual.device)].float()
            tail = genrec.ops.rq_encode(
                moved_on.contiguous(), codebooks[level + 1 :].float().contiguous(), backend=encode_backend
            )
            codes[rows, level + 1 :] = tail.cpu().numpy()
    return len(movers)


def _first_with_room(
    candidates: np.ndarray, known: np.ndarray, room: np.ndarray, fresh: dict[int, int], cap: int
) -> int | None:
    """Index of the first candidate cell with room: a known cell by ``room``, one that was empty by
    ``fresh`` (``cap`` until a mover takes it)."""
    for j in np.flatnonzero(np.where(known, room > 0, True)):
        if known[j] or fresh.get(int(candidates[j]), cap) > 0:
            return int(j)
    return None
