"""Choosing the fusion's weights on the validation split (genrec.fusion): every combination of the
grids below scored on the same candidates, the best by NDCG@10; for cold items, their bias, share
and similarity weight under a floor on the warm-target recall of the ranking without them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from genrec.fusion import Candidates, FusionWeights

#: The weights :func:`tune_fusion` tries (every combination).
HEAD_WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
COOC_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
EPS = (1e-4, 1e-3, 1e-2)
#: ... and, where the candidates carry a profile similarity, its weight (a cosine, so these are in
#: units of log-probability per unit of cosine).
SIM_WEIGHTS = (0.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)


def tune_fusion(
    candidates: Sequence[Candidates],
    targets: np.ndarray,
    metric: str = "ndcg@10",
    cooc: bool = True,
) -> tuple[FusionWeights, list[dict]]:
    """The weights with the best ``metric`` (ndcg@K or recall@K) over validation rows whose
    candidates (in row order, batch by batch) and held-out ``targets`` are given; and the table of
    every combination tried. Ties keep the earlier (smaller) combination.

    Each combination costs a few element-wise passes: a target's rank is the number of candidates
    scored above it, plus those tied with it earlier in the candidate order (the stable sort's rule)."""
    name, k = metric.split("@")
    k = int(k)
    if name not in ("ndcg", "recall"):
        raise ValueError(f"metric must be ndcg@K or recall@K, got {metric!r}")
    total = sum(len(c.items) for c in candidates)
    if total != len(targets):
        raise ValueError(f"candidates cover {total} rows, targets {len(targets)}")
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    batches, lo = [], 0
    for cand in candidates:
        t = targets_t[lo : lo + len(cand.items)]
        lo += len(cand.items)
        is_target = cand.items == t[:, None]
        found = is_target.any(1)
        pos = is_target.float().argmax(1)
        before = torch.arange(cand.items.shape[1])[None, :] < pos[:, None]
        batches.append((cand, found, pos, before))
    sims = SIM_WEIGHTS if any(c.sim is not None for c in candidates) else (0.0,)
    grid = [
        FusionWeights(h, c, e, sim_weight=v)
        for v, h, c, e in itertools.product(sims, HEAD_WEIGHTS, COOC_WEIGHTS if cooc else (0.0,), EPS)
        if c or e == EPS[0]  # eps only matters with a co-occurrence weight
    ]
    table = []
    for w in grid:
        ndcg = recall = 0.0
        for cand, found, pos, before in batches:
            s = cand.scores(w)
            st = s.gather(1, pos[:, None])
            rank = ((s > st) | ((s == st) & before)).sum(1)
            hit = found & (rank < k) & torch.isfinite(st[:, 0])
            recall += float(hit.sum())
            ndcg += float((hit / torch.log2(rank.float() + 2)).sum())
        table.append({**w.to_dict(), f"recall@{k}": recall / total, f"ndcg@{k}": ndcg / total})
    best = max(range(len(grid)), key=lambda i: (table[i][metric], -i))
    return grid[best], table


#: What :func:`tune_cold` tries: cold biases in units of the score's scale (1 + the other weights),
#: the weight of a cold item's own sequence score, and the cap epsilon (0: no cold item).
COLD_BIAS_UNITS = tuple(float(x) for x in np.arange(-6.0, 8.01, 0.5))
COLD_SEQ_WEIGHTS = (0.0, 0.5, 1.0)
COLD_EPSILONS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
COLD_SIM_UNITS = (0.0, 4.0, 8.0, 16.0, 32.0)
#: tune_cold keeps the warm-target validation Recall@10 at least this share of the list without cold items.
WARM_FLOOR = 0.98


def ranking_hits(candidates: Sequence[Candidates], targets: np.ndarray, w: FusionWeights, k: int = 10):
    """(hit [R] bool, rank [R] int64, -1 where missed) of each row's target in its top k under ``w``."""
    hits, ranks, lo = [], [], 0
    targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    for cand in candidates:
        t = targets_t[lo : lo + len(cand.items)]
        lo += len(cand.items)
        items, _ = cand.top(w, k)
        is_target = items == t[:, None]
        found = is_target.any(1)
        hits.append(found)
        ranks.append(torch.where(found, is_target.float().argmax(1), torch.full_like(t, -1)))
    return torch.cat(hits).numpy(), torch.cat(ranks).numpy()


#: What tune_cold maximises under the warm floor: NDCG@k over all rows, or the cold-target Recall@k
#: (as much exposure for new items as the warm floor allows; ties: the better NDCG).
COLD_OBJECTIVES = ("ndcg", "cold_recall")


def cold_share_cap(cold_target: np.ndarray, k: int = 10) -> float:
    """The largest epsilon ``model.cold_share_cap`` allows: the share of (validation) targets that
    are cold items, as the nearest whole number of places in a top k (at least one where any
    target is cold), so that a top k holds about as many cold items as users' choices give them."""
    share = float(np.asarray(cold_target, dtype=bool).mean()) if len(cold_target) else 0.0
    places = math.floor(share * k + 0.5)
    return max(places, 1 if share > 0 else 0) / k


def _epsilons(max_epsilon: float) -> list[float]:
    """COLD_EPSILONS above 0 and at most ``max_epsilon``, with the cap itself where it falls between."""
    eps = [e for e in COLD_EPSILONS if 0 < e <= max_epsilon + 1e-9]
    if max_epsilon > 0 and not any(abs(e - max_epsilon) < 1e-9 for e in eps):
        eps.append(max_epsilon)
    return eps


def tune_cold(
    candidates: Sequence[Candidates],
    targets: np.ndarray,
    cold_target: np.ndarray,
    base: FusionWeights,
    k: int = 10,
    reference: FusionWeights | None = None,
    objective: str = "ndcg",
    max_epsilon: float = 1.0,
) -> tuple[FusionWeights, list[dict]]:
    """The cold items' bias, sequence weight, similarity weight and cap epsilon for fixed warm weights
    ``base``: among the combinations whose warm-target Recall@k on the validation rows stays at least
    WARM_FLOOR of the ``reference`` ranking's (default: ``base`` without cold items), the best by
    ``objective`` (COLD_OBJECTIVES). The list without cold items (epsilon 0) is always eligible;
    epsilon is at most ``max_epsilon`` (:func:`cold_share_cap`; a cap between the grid's steps is
    tried itself).
    Ties keep the earlier combination (in the order of COLD_EPSILONS, COLD_SIM_UNITS,
    COLD_SEQ_WEIGHTS, COLD_BIAS_UNITS); the table lists every one."""
    if objective not in COLD_OBJECTIVES:
        raise ValueError(f"objective must be one of {COLD_OBJECTIVES}, got {objective!r}")
    cold_target = np.asarray(cold_target, dtype=bool)
    warm = ~cold_target
    scale = 1.0 + base.head_weight + base.cooc_weight
    table, best, best_key = [], None, None

    def measure(w: FusionWeights) -> dict:
        hit, rank = ranking_hits(candidates, targets, w, k)
        gain = np.where(hit, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
        return {
            f"ndcg@{k}": float(gain.mean()),
            f"recall@{k}": float(hit.mean()),
            f"cold_recall@{k}": float(hit[cold_target].mean()) if cold_target.any() else 0.0,
            f"warm_recall@{k}": float(hit[warm].mean()) if warm.any() else 0.0,
        }

    off = FusionWeights(**{**base.to_dict(), "cold_epsilon": 0.0})
    ref = FusionWeights(**{**(reference or base).to_dict(), "cold_epsilon": 0.0})
    floor = WARM_FLOOR * measure(ref)[f"warm_recall@{k}"]
    with_sim = any(c.sim is not None for c in candidates)
    grid = [off] + [
        FusionWeights(
            **{
                **base.to_dict(),
                "cold_bias": u * scale,
                "cold_seq_weight": c,
                "cold_epsilon": e,
                "cold_sim_weight": v * scale,
            }
        )
        for e in _epsilons(max_epsilon)
        for v in (COLD_SIM_UNITS if with_sim else (0.0,))
        for c in COLD_SEQ_WEIGHTS
        for u in COLD_BIAS_UNITS
    ]
    for i, w in enumerate(grid):
        row = {
            "cold_bias": w.cold_bias,
            "cold_seq_weight": w.cold_seq_weight,
            "cold_epsilon": w.cold_epsilon,
            "cold_sim_weight": w.cold_sim_weight,
        }
        row.update(measure(w))
        row["meets_warm_floor"] = i == 0 or row[f"warm_recall@{k}"] >= floor
        table.append(row)
        first = row[f"ndcg@{k}"] if objective == "ndcg" else row[f"cold_recall@{k}"]
        key = (first, row[f"ndcg@{k}"], -i)
        if row["meets_warm_floor"] and (best_key is None or key > best_key):
            best, best_key = w, key
    return best or off, table
