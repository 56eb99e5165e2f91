"""Running a recommender over a split and scoring it (numpy only; runs without polars/faiss).

A recommender is any object with ``recommend(histories: list[np.ndarray], k: int, users:
np.ndarray) -> np.ndarray`` returning item indices [len(histories), k], best first, -1 padding
at the end of a row where it has fewer than k. It may also have:
- ``extra_metrics() -> dict[str, float]``: called once after the last batch and merged into the
  metrics (e.g. ``invalid_rate`` of a generative model: the share of beams that were not items);
- ``name`` (str) and ``config() -> dict``: recorded in the results.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import genrec
from genrec.eval import metrics as M
from genrec.eval import sharding
from genrec.files import atomic_path, atomic_write_text
from genrec.heap import release_excess
from genrec.progress import progress_bar


@dataclass
class EvalResult:
    """Metrics (flat dict), per-user arrays (for paired tests) and what was evaluated how."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"metrics": _finite(self.metrics), **self.info}

    def save(self, path: str | Path, per_user: bool = True) -> dict[str, Path]:
        """Write ``path`` (JSON: metrics + info) and, with ``per_user``, ``<stem>.per_user.parquet``.

        Both are written to a temporary file and renamed into place.
        """
        path = Path(path)
        paths = {"json": path}
        payload = self.to_dict()
        if per_user:
            paths["per_user"] = path.with_name(f"{path.stem}.per_user.parquet")
            payload["per_user_file"] = paths["per_user"].name
            _write_parquet(paths["per_user"], self.per_user)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
        return paths


def _write_parquet(path: Path, columns: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(dict(columns)), tmp)


def load_per_user(path: str | Path) -> dict[str, np.ndarray]:
    """The per-user arrays written by :meth:`EvalResult.save` (``path``: the JSON or the parquet)."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_name(json.loads(path.read_text())["per_user_file"])
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _finite(d: dict) -> dict:
    """NaN/inf become None so the JSON stays standard."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class RecommenderOutputError(ValueError):
    """A recommender returned something that is not a valid ranked list."""


def check_recommendations(recs, n_rows: int, k: int, num_items: int, who: str) -> np.ndarray:
    """``recs`` as int64 [n_rows, k], or a RecommenderOutputError saying which row breaks which rule."""
    if hasattr(recs, "detach"):  # a torch tensor, on any device
        recs = recs.detach().cpu().numpy()
    recs = np.asarray(recs)
    if recs.shape != (n_rows, k):
        raise RecommenderOutputError(
            f"{who}.recommend returned shape {list(recs.shape)}, expected [{n_rows}, {k}]"
        )
    if not np.issubdtype(recs.dtype, np.integer):
        raise RecommenderOutputError(f"{who}.recommend returned {recs.dtype}; item indices must be integers")
    recs = recs.astype(np.int64, copy=False)
    bad = (recs < -1) | (recs >= num_items)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise RecommenderOutputError(
            f"{who}.recommend row {r}, position {c}: item {recs[r, c]} is outside 0..{num_items - 1} (or -1)"
        )
    missing = recs < 0
    if (missing[:, :-1] & ~missing[:, 1:]).any():
        r = int(np.argwhere(missing[:, :-1] & ~missing[:, 1:])[0, 0])
        raise RecommenderOutputError(
            f"{who}.recommend row {r}: -1 may only pad the end of a row, got {recs[r].tolist()}"
        )
    s = np.sort(recs, axis=1)
    dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
    if dup.any():
        r, c = np.argwhere(dup)[0]
        raise RecommenderOutputError(f"{who}.recommend row {r}: item {s[r, c + 1]} is recommended twice")
    return recs


def drop_history_items(recs: np.ndarray, histories: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Each row without the items of its history, compacted to the front, cut to k, -1 padded."""
    out = np.full((len(recs), k), -1, dtype=np.int64)
    for r, (row, hist) in enumerate(zip(recs, histories, strict=True)):
        kept = row[(row >= 0) & ~np.isin(row, hist)][:k]
        out[r, : len(kept)] = kept
    return out


def evaluate(
    recommender,
    dataset,
    split: str = "test",
    ks: Sequence[int] = (5, 10, 20),
    *,
    batch_size: int = 1024,
    exclude_history: bool = False,
    max_history: int | None = None,
    rows: np.ndarray | None = None,
    progress: bool = True,
    output: str | Path | None = None,
    shard=None,
) -> EvalResult:
    """Score ``recommender`` on ``split`` of a prepared ``dataset``, one held-out item per user.

    The recommender ranks the whole catalogue; history items stay eligible unless
    ``exclude_history`` (then the evaluator asks for extra items and drops the history's).
    ``max_history`` truncates each history to its most recent items; ``rows`` evaluates a subset
    of the split's rows. MRR is cut at max(ks), the length of the lists asked for. With
    ``output``, the result is saved there (see :meth:`EvalResult.save`).

    ``shard`` (a genrec.train.distributed.DistInfo of a torchrun process group): rank r scores
    batches r, r + world_size, ... (the batches one process would make, so every list is the same),
    and the per-user results are gathered, so every rank returns what one process would (the
    recommender's ``extra_metrics`` averaged over ranks, weighted by their users). Only rank 0
    shows progress and saves ``output``.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] <= 0:
        raise ValueError(f"ks must be positive, got {ks}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    data = dataset.split(split)
    rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
    who = getattr(recommender, "name", type(recommender).__name__)

    starts = sharding.my_batches(len(rows), batch_size, shard)
    mine = sum(min(batch_size, len(rows) - lo) for lo in starts)
    ranks, novelty, popularity, per_k_counts, seconds = _score_batches(
        recommender,
        dataset,
        data,
        rows,
        ks,
        starts,
        batch_size=batch_size,
        exclude_history=exclude_history,
        max_history=max_history,
        who=who,
        label=f"{who} on {split}",
        total=mine,
        show_progress=progress and sharding.is_main(shard),
    )
    extra = recommender.extra_metrics() if hasattr(recommender, "extra_metrics") else {}
    if sharding.enabled(shard):  # every rank's rows, as one process would hold them
        ranks, novelty, popularity, per_k_counts, extra, seconds, rank_users = sharding.gather(
            shard, starts, batch_size, ranks, novelty, popularity, per_k_counts, extra, mine, seconds
        )

    per_user, metrics = _per_user_and_metrics(data, rows, ks, ranks, novelty, popularity, per_k_counts)
    _add_cold_start_groups(dataset, ks, per_user, metrics)
    clash = set(extra) & set(metrics)
    if clash:
        raise ValueError(f"{who}.extra_metrics() returned keys the evaluator computes: {sorted(clash)}")
    metrics.update({k: float(v) for k, v in extra.items()})

    info = _run_info(recommender, who, dataset, split, ks, len(rows), exclude_history, max_history, seconds)
    if sharding.enabled(shard):
        info["world_size"] = shard.world_size
        info["users_per_rank"] = rank_users
    result = EvalResult(metrics, per_user, info)
    if output is not None and sharding.is_main(shard):
        result.save(output)
    return result


def _score_batches(
    recommender,
    dataset,
    data,
    rows: np.ndarray,
    ks: tuple[int, ...],
    starts: list[int],
    *,
    batch_size: int,
    exclude_history: bool,
    max_history: int | None,
    who: str,
    label: str,
    total: int,
    show_progress: bool,
):
    """Run ``recommender`` over the batches of ``rows`` that start at ``starts`` (this rank's), under
    a progress bar (``label``, ``total`` users), and time it.

    Returns (ranks, novelty, popularity, per_k_counts, seconds): each row's target rank (-1 where
    the target is not in the list, and in rows this rank did not score), per k each row's novelty
    and average popularity of its top k (NaN in rows not scored) and how often each item was
    recommended in a top k, and the wall-clock seconds of the loop.
    """
    num_items, max_k = dataset.num_items, ks[-1]
    train_counts = dataset.train_item_counts()
    info_values = M.self_information(train_counts)

    ranks = np.full(len(rows), -1, dtype=np.int64)
    per_k_counts = {k: np.zeros(num_items, dtype=np.int64) for k in ks}
    novelty = {k: np.full(len(rows), np.nan) for k in ks}
    popularity = {k: np.full(len(rows), np.nan) for k in ks}
    start = time.perf_counter()
    with progress_bar(label, total, show_progress, unit="users", transient=True) as advance:
        for lo in starts:
            batch = rows[lo : lo + batch_size]
            histories = data.history_list(batch)
            if max_history is not None:
                histories = [h[len(h) - min(len(h), max_history) :] for h in histories]
            recs = _recommend_batch(
                recommender, histories, data.users[batch], max_k, num_items, exclude_history, who
            )
            sl = slice(lo, lo + len(batch))
            ranks[sl] = M.target_ranks(recs, data.targets[batch])
            for k in ks:
                per_k_counts[k] += M.recommendation_counts(recs, k, num_items)
                novelty[k][sl] = M.mean_of_top(recs, k, info_values)
                popularity[k][sl] = M.mean_of_top(recs, k, train_counts)
            advance(len(batch))
            release_excess()  # bounds the freed memory genrec.heap keeps between batches
    seconds = time.perf_counter() - start
    return ranks, novelty, popularity, per_k_counts, seconds


def _recommend_batch(
    recommender,
    histories: list[np.ndarray],
    users: np.ndarray,
    max_k: int,
    num_items: int,
    exclude_history: bool,
    who: str,
) -> np.ndarray:
    """The checked lists [len(histories), max_k] of one batch. With ``exclude_history``, asks for
    enough extra items that ``max_k`` remain once the history's are dropped."""
    fetch = max_k
    if exclude_history:
        fetch = min(num_items, max_k + max((len(h) for h in histories), default=0))
    recs = recommender.recommend(histories, fetch, users)
    recs = check_recommendations(recs, len(users), fetch, num_items, who)
    if exclude_history:
        recs = drop_history_items(recs, histories, max_k)
    return recs


def _per_user_and_metrics(
    data,
    rows: np.ndarray,
    ks: tuple[int, ...],
    ranks: np.ndarray,
    novelty: dict[int, np.ndarray],
    popularity: dict[int, np.ndarray],
    per_k_counts: dict[int, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The per-user arrays (for paired tests) and the metrics over all users, in their usual order."""
    per_user: dict[str, np.ndarray] = {
        "row": rows,
        "user_idx": data.users[rows],
        "target": data.targets[rows],
        "rank": ranks,
        "reciprocal_rank": M.reciprocal_rank(ranks),
    }
    metrics: dict[str, float] = {}
    for k in ks:
        per_user[f"recall@{k}"] = M.recall_at(ranks, k)
        per_user[f"ndcg@{k}"] = M.ndcg_at(ranks, k)
        per_user[f"novelty@{k}"] = novelty[k]
        per_user[f"avg_popularity@{k}"] = popularity[k]
    for k in ks:
        metrics[f"recall@{k}"] = _mean(per_user[f"recall@{k}"])
        metrics[f"ndcg@{k}"] = _mean(per_user[f"ndcg@{k}"])
    metrics["mrr"] = _mean(per_user["reciprocal_rank"])
    for k in ks:
        metrics[f"coverage@{k}"] = M.coverage(per_k_counts[k])
        metrics[f"gini@{k}"] = M.gini(per_k_counts[k])
        metrics[f"novelty@{k}"] = _mean(novelty[k])
        metrics[f"avg_popularity@{k}"] = _mean(popularity[k])
    return per_user, metrics


def _add_cold_start_groups(
    dataset, ks: tuple[int, ...], per_user: dict[str, np.ndarray], metrics: dict[str, float]
) -> None:
    """On a cold-start split, adds ``per_user["cold_target"]`` and the cold- and warm-target
    accuracy (``cold_target/...``, ``warm_target/...``) to ``metrics``; else changes nothing."""
    cold_items = dataset.cold_items() if hasattr(dataset, "cold_items") else np.zeros(0, dtype=np.int64)
    if len(cold_items):  # a cold-start split (genrec.data.cold_start): report cold-target users apart
        per_user["cold_target"] = np.isin(per_user["target"], cold_items)
        metrics.update(_group_metrics(per_user, ks, per_user["cold_target"], "cold_target"))
        metrics.update(_group_metrics(per_user, ks, ~per_user["cold_target"], "warm_target"))


def _run_info(
    recommender,
    who: str,
    dataset,
    split: str,
    ks: tuple[int, ...],
    num_users: int,
    exclude_history: bool,
    max_history: int | None,
    seconds: float,
) -> dict:
    """What was evaluated how, recorded next to the metrics."""
    return {
        "recommender": who,
        "recommender_config": recommender.config() if hasattr(recommender, "config") else {},
        "dataset": dataset.name,
        "dataset_path": str(dataset.path),
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "ks": list(ks),
        "mrr_cutoff": ks[-1],
        "num_users": num_users,
        "num_items": dataset.num_items,
        "exclude_history": exclude_history,
        "max_history": max_history,
        "seconds": seconds,
        "users_per_second": num_users / seconds if seconds > 0 else None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "genrec_version": genrec.__version__,
    }


def _group_metrics(per_user: dict[str, np.ndarray], ks: Sequence[int], rows: np.ndarray, group: str) -> dict:
    """Accuracy over the users in ``rows`` (bool), keys ``{group}/recall@k`` etc. and ``{group}/users``."""
    out = {f"{group}/users": float(rows.sum())}
    for k in ks:
        out[f"{group}/recall@{k}"] = _mean(per_user[f"recall@{k}"][rows])
        out[f"{group}/ndcg@{k}"] = _mean(per_user[f"ndcg@{k}"][rows])
    out[f"{group}/mrr"] = _mean(per_user["reciprocal_rank"][rows])
    return out


def sample_rows(total: int, users: int | None, seed: int) -> np.ndarray | None:
    """A seeded sample of ``users`` of a split's ``total`` rows (sorted), or None for every row
    (``users`` None or 0, or at least ``total``)."""
    if not users or users >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=users, replace=False))


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
