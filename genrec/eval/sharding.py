"""Evaluation split over the processes of a torchrun group (genrec.eval.evaluate(..., shard=info)).

Rank r scores batches r, r + W, ... of the rows, exactly the batches one process would form, so
each user's list is the one a single process computes; the per-user values are then gathered
(all-gather, so every rank can return the whole result) and the metrics are computed from them as
one process would, in the original row order. torch.distributed is imported only when sharding.
"""

from __future__ import annotations

import numpy as np


def enabled(shard) -> bool:
    return shard is not None and shard.world_size > 1


def is_main(shard) -> bool:
    return shard is None or shard.rank == 0


def my_batches(num_rows: int, batch_size: int, shard) -> list[int]:
    """First rows of the batches this rank scores."""
    starts = list(range(0, num_rows, batch_size))
    return starts[shard.rank :: shard.world_size] if enabled(shard) else starts


def gather(shard, starts, batch_size, ranks, novelty, popularity, per_k_counts, extra, num_mine, seconds):
    """Every rank's rows merged into full arrays (each row is scored by exactly one rank), the
    recommendation counts summed, ``extra`` metrics averaged weighted by each rank's users, the
    slowest rank's seconds and the users each rank scored."""
    import torch.distributed as dist

    n = len(ranks)
    mine = (
        np.concatenate([np.arange(lo, min(n, lo + batch_size)) for lo in starts])
        if starts
        else np.zeros(0, int)
    )
    payload = {
        "rows": mine,
        "ranks": ranks[mine],
        "novelty": {k: v[mine] for k, v in novelty.items()},
        "popularity": {k: v[mine] for k, v in popularity.items()},
        "counts": per_k_counts,
        "extra": extra,
        "users": num_mine,
        "seconds": seconds,
    }
    parts: list = [None] * shard.world_size
    dist.all_gather_object(parts, payload)
    ranks = np.full(n, -1, dtype=np.int64)
    novelty = {k: np.full(n, np.nan) for k in novelty}
    popularity = {k: np.full(n, np.nan) for k in popularity}
    seen = np.zeros(n, dtype=np.int64)
    for part in parts:
        rows = part["rows"]
        seen[rows] += 1
        ranks[rows] = part["ranks"]
        for k in novelty:
            novelty[k][rows] = part["novelty"][k]
            popularity[k][rows] = part["popularity"][k]
    if not (seen == 1).all():
        raise RuntimeError(f"sharded evaluation: {int((seen != 1).sum())} rows were not scored exactly once")
    counts = {k: sum(part["counts"][k] for part in parts) for k in per_k_counts}
    weighted = [p for p in parts if p["users"] > 0]
    total = sum(p["users"] for p in weighted)
    keys = sorted({key for p in weighted for key in p["extra"]})
    extra = {key: sum(float(p["extra"].get(key, 0.0)) * p["users"] for p in weighted) / total for key in keys}
    users = [int(p["users"]) for p in parts]
    return ranks, novelty, popularity, counts, extra, max(p["seconds"] for p in parts), users
