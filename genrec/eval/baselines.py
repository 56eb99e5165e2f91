"""Non-learned baselines: most popular items, and item-to-item co-occurrence (content-KNN, the
third, lives in genrec.eval.content_knn and is made here by name too).

Both learn from the training part of the split only (``dataset.train_bounds()``), so scoring on
valid or test never sees the held-out items. Ties go to the more popular item, then to the
smaller item index.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from genrec.eval.content_knn import ContentKNN, ContentKNNConfig
from genrec.eval.evaluator import evaluate


def popularity_priority(train_counts: np.ndarray) -> np.ndarray:
    """int64 [n]: each item's place in the popularity order (0 = most popular; ties: smaller index)."""
    order = np.lexsort((np.arange(len(train_counts)), -np.asarray(train_counts)))
    priority = np.empty(len(order), dtype=np.int64)
    priority[order] = np.arange(len(order))
    return priority


class MostPop:
    """The same list for everyone: items by training interaction count, ties to the smaller index."""

    name = "mostpop"

    def __init__(self, train_counts: np.ndarray) -> None:
        self.train_counts = np.asarray(train_counts, dtype=np.int64)
        self.order = np.lexsort((np.arange(len(self.train_counts)), -self.train_counts))

    @classmethod
    def from_dataset(cls, dataset) -> MostPop:
        return cls(dataset.train_item_counts())

    def config(self) -> dict:
        return {"counts": "training split interactions"}

    def recommend(self, histories: Sequence[np.ndarray], k: int, users: np.ndarray) -> np.ndarray:
        row = np.full(k, -1, dtype=np.int64)
        top = self.order[:k]
        row[: len(top)] = top
        return np.tile(row, (len(histories), 1))


@dataclass(frozen=True)
class CoOccurrenceConfig:
    """How the item-to-item scores are built and combined.

    window: pairs of training items at most this many steps apart count (1 = transitions);
    directed: count only "a then b" (True) or both orders (False);
    distance_decay: a pair d steps apart weighs distance_decay ** (d - 1);
    source_norm: divide a's row by (count of a) ** source_norm (1 = a conditional probability, so
        popular history items do not drown the others);
    target_norm: divide b's column by (count of b) ** target_norm (dampens popular targets);
    history: how many of the user's most recent items vote; recency: the vote of the item j steps
        before the last weighs recency ** j;
    max_neighbours: each item keeps its this many highest-scoring neighbours (ties: the lower item
        index; 0 = all). A user's votes cost the summed row lengths of the recent items, and a
        popular item of a million-item catalogue co-occurs with hundreds of thousands of items
        (popularity-weighted mean row 16,000 in the 1M synthetic catalogue; Beauty's longest row
        889, Sports' 1,883: both unchanged by the default).
    """

    # Defaults: the variant `--tune` picked on Amazon Beauty's validation split.
    window: int = 10
    directed: bool = True
    distance_decay: float = 0.7
    source_norm: float = 1.0
    target_norm: float = 0.0
    history: int = 3
    recency: float = 0.5
    max_neighbours: int = 2000

    def __post_init__(self) -> None:
        if self.window < 1 or self.history < 1:
            raise ValueError(f"window and history must be >= 1, got {self.window}, {self.history}")
        if self.max_neighbours < 0:
            raise ValueError(f"max_neighbours must be >= 0 (0: every neighbour), got {self.max_neighbours}")
        if not (0 < self.distance_decay <= 1 and 0 < self.recency <= 1):
            raise ValueError("distance_decay and recency must be in (0, 1]")


class CoOccurrence:
    """Scores item b for a user by how strongly b followed (or sat near) the user's recent items in
    the training sequences; items no recent item points to fall back to popularity order."""

    name = "cooccurrence"

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        num_items: int,
        train_counts: np.ndarray,
        config: CoOccurrenceConfig | None = None,
        batch_size: int = 256,
    ) -> None:
        self.cfg = config or CoOccurrenceConfig()
        self.num_items = num_items
        self.batch_size = batch_size
        self.train_counts = np.asarray(train_counts, dtype=np.int64)
        self.priority = popularity_priority(self.train_counts)
        self.popular = np.argsort(self.priority)  # items, most popular first
        self.indptr, self.indices, self.values = self._build(sequences)

    @classmethod
    def from_dataset(cls, dataset, config: CoOccurrenceConfig | None = None, **kwargs) -> CoOccurrence:
        starts, ends = dataset.train_bounds()
        sequences = [dataset.items[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        return cls(sequences, dataset.num_items, dataset.train_item_counts(), config, **kwargs)

    def config(self) -> dict:
        return asdict(self.cfg)

    def arrays(self) -> dict[str, np.ndarray]:
        """The statistics as plain arrays (what :meth:`from_arrays` takes back): CSR pair matrix and
        training counts; with :meth:`config` they are the whole state."""
        return {
            "indptr": self.indptr,
            "indices": self.indices,
            "values": self.values,
            "train_counts": self.train_counts,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], config: CoOccurrenceConfig) -> CoOccurrence:
        """Statistics saved by :meth:`arrays`, checked for shape and range (they may come from a file)."""
        counts = np.asarray(arrays["train_counts"], dtype=np.int64)
        n = len(counts)
        indptr = np.asarray(arrays["indptr"], dtype=np.int64)
        indices = np.asarray(arrays["indices"], dtype=np.int64)
        values = np.asarray(arrays["values"], dtype=np.float64)
        if (
            indptr.shape != (n + 1,)
            or indptr[0] != 0
            or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(indices)
            or len(values) != len(indices)
            or (len(indices) and (indices.min() < 0 or indices.max() >= n))
            or not np.all(np.isfinite(values))
        ):
            raise ValueError(f"co-occurrence arrays are inconsistent (catalogue of {n} items)")
        self = cls([], n, counts, config)
        self.indptr, self.indices, self.values = indptr, indices, values
        return self

    def _build(self, sequences: Sequence[np.ndarray]):
        """The weighted pair matrix in CSR form (indptr [n+1], indices, values), normalised."""
        cfg, n = self.cfg, self.num_items
        flat = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
            if sequences
            else np.zeros(0, np.int64)
        )
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        user_of = np.repeat(np.arange(len(lengths)), lengths)
        flat = flat.astype(np.int32 if n < 2**31 else np.int64)  # half the memory of the pair lists
        # Each pair keeps its distance (one byte), not its weight: a million items' pairs number
        # over 100 M, and their float64 weights alone would be a gigabyte.
        weights = np.array([cfg.distance_decay ** (d - 1) for d in range(1, cfg.window + 1)])
        src, dst, dist = [], [], []
        for d in range(1, cfg.window + 1):
            a, b = flat[:-d], flat[d:]
            pair = (user_of[:-d] == user_of[d:]) & (a != b)  # an item does not recommend itself
            a, b = a[pair], b[pair]
            step = np.full(len(a), d - 1, dtype=np.min_scalar_type(cfg.window))
            src.append(a), dst.append(b), dist.append(step)
            if not cfg.directed:
                src.append(b), dst.append(a), dist.append(step)
        src, dst, dist = np.concatenate(src), np.concatenate(dst), np.concatenate(dist)
        rows, cols, values = _sum_pairs(src, dst, dist, weights, n)
        counts = np.maximum(self.train_counts, 1).astype(np.float64)
        values = values / counts[rows] ** cfg.source_norm / counts[cols] ** cfg.target_norm
        if cfg.max_neighbours:
            keep = _strongest_per_row(rows, cols, values, n, cfg.max_neighbours)
            if keep is not None:
                rows, cols, values = rows[keep], cols[keep], values[keep]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return indptr, cols.astype(np.int64), values

    def _votes(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, item, weight) of every vote the histories' recent items cast (unaggregated)."""
        cfg = self.cfg
        rows, sources, weights = [], [], []
        for r, h in enumerate(histories):
            recent = np.asarray(h[len(h) - min(len(h), cfg.history) :], dtype=np.int64)[::-1]
            rows.append(np.full(len(recent), r, dtype=np.int64))
            sources.append(recent)
            weights.append(cfg.recency ** np.arange(len(recent)))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        rows, sources, weights = np.concatenate(rows), np.concatenate(sources), np.concatenate(weights)
        lo = self.indptr[sources]
        lengths = self.indptr[sources + 1] - lo
        # Gather every (row, neighbour) pair of the CSR rows at once.
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = np.repeat(lo, lengths) + within
        return np.repeat(rows, lengths), self.indices[pos], np.repeat(weights, lengths) * self.values[pos]

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """float64 [len(histories), num_items]: the summed votes (dense; for inspection and tests)."""
        row, item, weight = self._votes(histories)
        n = self.num_items
        flat = np.bincount(row * n + item, weights=weight, minlength=len(histories) * n)
        return flat.reshape(len(histories), n)

    def recommend(self, histories: Sequence[np.ndarray], k: int, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(histories), k), dtype=np.int64)
        for lo in range(0, len(histories), self.batch_size):
            chunk = histories[lo : lo + self.batch_size]
            out[lo : lo + len(chunk)] = self._recommend(chunk, k)
        return out

    def voted(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, item, score) of every item the histories' recent items vote for, votes summed per
        (row, item); rows in order, each row's items best first (ties: the more popular item, then
        the smaller index). Sparse: memory grows with the votes, not with rows x catalogue."""
        n = self.num_items
        row, item, weight = self._votes(histories)
        uniq, inverse = np.unique(row * n + item, return_inverse=True)
        score = np.bincount(inverse, weights=weight)
        row, item = uniq // n, uniq % n
        order = np.lexsort((self.priority[item], -score, row))
        return row[order], item[order], score[order]

    def _recommend(self, histories: Sequence[np.ndarray], k: int) -> np.ndarray:
        b = len(histories)
        row, item, _ = self.voted(histories)
        place = np.arange(len(row)) - np.searchsorted(row, row)
        out = np.full((b, k), -1, dtype=np.int64)
        keep = place < k
        out[row[keep], place[keep]] = item[keep]
        voted = np.minimum(np.bincount(row, minlength=b), k)
        # Fill the rest of each list in popularity order, skipping items already in it.
        fill = self.popular[: 2 * k]
        taken = (fill[None, :, None] == out[:, None, :]).any(axis=2)
        wanted = ~taken & (np.cumsum(~taken, axis=1) <= (k - voted)[:, None])
        dest = voted[:, None] + np.cumsum(wanted, axis=1) - 1
        r, c = np.nonzero(wanted)
        out[r, dest[r, c]] = np.broadcast_to(fill, wanted.shape)[r, c]
        return out


def cooccurrence_grid() -> list[CoOccurrenceConfig]:
    """The variants tried on the validation split by ``genrec eval --model cooccurrence --tune``."""
    grid = []
    for window, decay in ((1, 1.0), (3, 0.5), (10, 0.7)):
        for directed in (True, False):
            for target_norm in (0.0, 0.5):
                for history, recency in ((1, 1.0), (3, 0.5), (10, 0.7)):
                    grid.append(
                        CoOccurrenceConfig(window, directed, decay, 1.0, target_norm, history, recency)
                    )
    return grid


BASELINES = ("mostpop", "cooccurrence", "content-knn")


def make_baseline(name: str, dataset, **params):
    """A baseline by name; ``params`` are :class:`CoOccurrenceConfig` fields for ``cooccurrence``,
    and ``embeddings`` (a ``genrec embed`` folder or .npy) plus :class:`ContentKNNConfig` fields
    for ``content-knn``."""
    if name == "mostpop":
        if params:
            raise ValueError(f"mostpop takes no parameters, got {sorted(params)}")
        return MostPop.from_dataset(dataset)
    if name == "cooccurrence":
        fields = CoOccurrenceConfig.__dataclass_fields__
        unknown = set(params) - set(fields)
        if unknown:
            raise ValueError(
                f"unknown cooccurrence parameter(s) {sorted(unknown)}; known: {', '.join(fields)}"
            )
        return CoOccurrence.from_dataset(dataset, CoOccurrenceConfig(**params))
    if name == "content-knn":
        embeddings = params.pop("embeddings", None)
        if embeddings is None:
            raise ValueError("content-knn needs embeddings= (a `genrec embed` output folder or its .npy)")
        fields = ContentKNNConfig.__dataclass_fields__
        unknown = set(params) - set(fields)
        if unknown:
            raise ValueError(
                f"unknown content-knn parameter(s) {sorted(unknown)}; known: embeddings, {', '.join(fields)}"
            )
        return ContentKNN.from_dataset(dataset, embeddings, ContentKNNConfig(**params))
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


def tune_cooccurrence(
    dataset,
    grid: Sequence[CoOccurrenceConfig] | None = None,
    metric: str = "ndcg@10",
    ks: Sequence[int] = (5, 10, 20),
    progress: bool = False,
) -> tuple[CoOccurrenceConfig, list[dict]]:
    """Evaluate each variant on the validation split; return the best by ``metric`` and the table.

    Ties keep the earlier variant in the grid (the grid lists simpler variants first).
    """

    grid = list(grid or cooccurrence_grid())
    table = []
    for cfg in grid:
        result = evaluate(CoOccurrence.from_dataset(dataset, cfg), dataset, "valid", ks, progress=progress)
        if metric not in result.metrics:
            raise ValueError(f"metric {metric!r} is not computed; choose one of {', '.join(result.metrics)}")
        table.append({**asdict(cfg), **{m: result.metrics[m] for m in ("recall@10", "ndcg@10", metric)}})
    best = max(range(len(grid)), key=lambda i: (table[i][metric], -i))
    return grid[best], table


PAIRS_PER_PASS = 1 << 24
"""Pairs aggregated at once by :func:`_sum_pairs` (a few hundred MB of sort buffers): the 1M-item
synthetic catalogue has 110 M pairs, whose one-shot np.unique peaked near 13 GB."""


def _sum_pairs(
    src: np.ndarray, dst: np.ndarray, kind: np.ndarray, weights: np.ndarray, n: int, per_pass: int | None = None
):
    """(rows, cols, summed weights) of the distinct (src, dst) pairs, ordered by (src, dst); pair i
    weighs ``weights[kind[i]]``.

    The pairs are taken a range of source items at a time, so memory follows ``per_pass``, not the
    pair count; within a range the weights are summed in their input order, as one np.unique +
    np.bincount over all pairs would, so the sums are the same to the bit."""
    per_pass = per_pass or PAIRS_PER_PASS
    if len(src) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    total = np.cumsum(np.bincount(src, minlength=n))  # pairs of sources 0..i
    cuts = np.searchsorted(total, np.arange(per_pass, total[-1], per_pass), side="left") + 1
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))  # source ranges of about per_pass pairs
    rows, cols, sums = [], [], []
    for lo, hi in itertools.pairwise(bounds.tolist()):
        sel = (src >= lo) & (src < hi) if len(bounds) > 2 else slice(None)
        key = src[sel].astype(np.int64) * n + dst[sel]
        uniq, inverse = np.unique(key, return_inverse=True)
        sums.append(np.bincount(inverse, weights=weights[kind[sel]], minlength=len(uniq)))
        rows.append(uniq // n)
        cols.append(uniq % n)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sums)


def _strongest_per_row(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int, cap: int):
    """bool mask keeping each row's ``cap`` highest values (ties: the lower column) of pairs sorted
    by (row, col), which stay in that order; None when no row is longer than ``cap``."""
    lengths = np.bincount(rows, minlength=n)
    long_rows = np.flatnonzero(lengths > cap)
    if not len(long_rows):
        return None
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    keep = np.ones(len(rows), dtype=bool)
    for r in long_rows.tolist():  # few rows: thousands at a million items
        lo, hi = starts[r], starts[r] + lengths[r]
        order = np.lexsort((cols[lo:hi], -values[lo:hi]))  # value descending, then lower column
        keep[lo + order[cap:]] = False
    return keep
