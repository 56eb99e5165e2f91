"""How well the fusion recovers a warm item's collaborative embedding from its content alone: a
seeded share of warm items is held out of training, and each held-out item's estimate is ranked
against every warm item's real embedding, in blocks so that memory stays bounded at any
catalogue size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PROBE_K = 10
PROBE_MAX_ITEMS = 2000
"""Probe items scored: beyond this many, a seeded sample of them (the same one every epoch).
Each is compared with every warm item, so the cost is this times the catalogue."""
PROBE_SIMILARITIES = 2000 * 100_000
"""... and at most about this many probe x warm similarities per probe (the fusion probes once an
epoch): a catalogue with more than 100,000 warm items probes fewer items, down to PROBE_MIN_ITEMS
(200 at a million items, where 2,000 cost 45 % of the embed stage)."""
PROBE_MIN_ITEMS = 200
PROBE_BLOCK = 1 << 26
"""Similarities held at once (256 MiB of float32): probe rows are scored in blocks of this many;
fewer rows per block would re-read the whole warm bank for each few rows."""


def probe_size(warm_items: int) -> int:
    """How many probe items a catalogue of ``warm_items`` warm items scores (see PROBE_SIMILARITIES)."""
    return min(PROBE_MAX_ITEMS, max(PROBE_MIN_ITEMS, PROBE_SIMILARITIES // max(warm_items, 1)))


def probe_sample(probe: np.ndarray, max_items: int = PROBE_MAX_ITEMS, seed: int = 0) -> np.ndarray:
    """``probe`` itself when it has at most ``max_items`` items, else a seeded sorted sample of them."""
    if len(probe) <= max_items:
        return probe
    rng = np.random.default_rng([seed, 0x9B0BE, 1])
    return np.sort(rng.choice(probe, max_items, replace=False))


class BehaviourProbe:
    """How close estimated behaviour embeddings of held-out warm items are to their real ones.

    Built once per probe set: the warm items' real embeddings (the bank) and each probe item's
    true nearest warm items; calling it with estimates for :attr:`items` scores them. Probe rows
    are compared with the bank in blocks of ``block`` similarities, so memory stays bounded
    whatever the catalogue size, and each row's numbers are the ones a dense [probe x warm]
    matrix gives.

    ``recall@k``: the item itself is among the k warm items nearest its estimate (items scoring
    strictly higher count against it; ties go its way); ``neighbours@k``: overlap of the k
    nearest warm items of estimate and of truth (the item excluded).
    """

    def __init__(
        self,
        probe: np.ndarray,
        behaviour: np.ndarray,
        warm: np.ndarray,
        k: int = PROBE_K,
        *,
        max_items: int | None = None,
        seed: int = 0,
        block: int = PROBE_BLOCK,
    ) -> None:
        self.k = k
        warm_idx = np.flatnonzero(warm)
        if max_items is None:
            max_items = probe_size(len(warm_idx))
        self.items = probe_sample(np.asarray(probe, dtype=np.int64), max_items, seed)
        self.bank = torch.from_numpy(np.ascontiguousarray(behaviour[warm_idx], dtype=np.float32))
        self.truth = torch.from_numpy(np.ascontiguousarray(behaviour[self.items], dtype=np.float32))
        self.pos = torch.from_numpy(np.searchsorted(warm_idx, self.items))
        self.kk = min(k, len(warm_idx) - 1)
        self.rows = max(1, block // max(len(warm_idx), 1))
        self.near_true = (
            torch.cat([self._nearest(sims, lo).indices for lo, sims in self._blocks(self.truth)])
            if len(self.items) and self.kk > 0
            else torch.zeros(len(self.items), 0, dtype=torch.long)
        )

    def _blocks(self, x: torch.Tensor):
        """(first row, similarities of rows [first, first + rows) of ``x`` to the bank), one block
        at a time in one reused buffer (a fresh quarter-gigabyte per block costs page faults)."""
        buffer = torch.empty(min(self.rows, len(x)), len(self.bank))
        for lo in range(0, len(x), self.rows):
            part = x[lo : lo + self.rows]
            yield lo, torch.mm(part, self.bank.t(), out=buffer[: len(part)])

    def _nearest(self, sims: torch.Tensor, lo: int) -> torch.return_types.topk | None:
        """The kk nearest bank rows of each row of the block ``sims`` (values and indices), the
        item itself excluded (overwrites its own similarity); None when kk is 0."""
        sims[torch.arange(len(sims)), self.pos[lo : lo + len(sims)]] = float("-inf")
        return sims.topk(self.kk, dim=1) if self.kk > 0 else None

    def __call__(self, estimates: np.ndarray) -> dict:
        """Metrics of ``estimates`` [len(items), D] (any length rows; normalised here)."""
        if len(self.items) == 0:
            return {}
        if len(estimates) != len(self.items):
            raise ValueError(f"{len(estimates)} estimates for {len(self.items)} probe items")
        est = F.normalize(torch.from_numpy(np.asarray(estimates)).float(), dim=-1)
        hits, overlaps = [], []
        for lo, sims in self._blocks(est):
            own = sims[torch.arange(len(sims)), self.pos[lo : lo + len(sims)]]  # a copy
            near = self._nearest(sims, lo)
            if self.kk < self.k:  # fewer other warm items than k: the item is always within k
                hits.append(torch.ones(len(sims), dtype=torch.bool))
            else:  # fewer than k others score strictly higher <=> the k-th best other is <= own
                hits.append(near.values[:, self.k - 1] <= own)
            if near is not None:
                truth = self.near_true[lo : lo + len(sims)]
                overlaps.append(
                    (near.indices[:, :, None] == truth[:, None, :]).any(dim=2).float().mean(dim=1)
                )
        return {
            "items": len(self.items),
            "cosine": float((est * self.truth).sum(dim=1).mean()),
            f"recall@{self.k}": float(torch.cat(hits).float().mean()),
            f"neighbours@{self.k}": float(torch.cat(overlaps).mean()) if self.kk > 0 else 0.0,
        }


def behaviour_probe(
    estimates: np.ndarray,
    probe: np.ndarray,
    behaviour: np.ndarray,
    warm: np.ndarray,
    k: int = PROBE_K,
    *,
    max_items: int | None = None,
    seed: int = 0,
) -> dict:
    """:class:`BehaviourProbe` metrics of ``estimates`` [P, D] for the items ``probe``; ``behaviour``
    [N, D] unit rows, real for ``warm`` items. Beyond ``max_items`` probe items (default
    :func:`probe_size`), a seeded sample."""
    if len(probe) == 0:
        return {}
    scorer = BehaviourProbe(probe, behaviour, warm, k, max_items=max_items, seed=seed)
    rows = np.searchsorted(probe, scorer.items) if len(scorer.items) < len(probe) else slice(None)
    return scorer(np.asarray(estimates)[rows])
