"""Content-KNN: recommend the items whose embeddings lie closest to the user's recent items.

A training-free baseline for the cold-start protocol: an item needs no interaction to be
recommended, only a row in an item-embedding file (any ``genrec embed`` output). Item embeddings
are scaled to unit length; the user's query is the weighted mean of the last ``history`` items'
embeddings, the item j steps before the last weighing ``decay ** j`` (the last weighs 1), scaled to
unit length; an item's score is its cosine with the query. Top-k is exact, computed block by block
of users (memory: one block x catalogue score matrix at a time).

Ties: equal scores go to the smaller item index. Items with equal unit embeddings (e.g. identical
texts) score bitwise alike, because the product is taken once per distinct row. A user whose query
is zero (no history, or zero embeddings) scores every item 0 and gets items 0, 1, 2, ...

numpy only (with genrec.embed.artifacts, itself numpy only): runs where torch, polars and faiss
are absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genrec.embed.artifacts import (
    EMBEDDINGS_FILE,
    META_FILE,
    EmbeddingError,
    check_embeddings,
    item_ids_sha256,
    load_embeddings,
)
from genrec.eval.evaluator import evaluate
from genrec.files import array_sha256

# Encoders whose output depends on item content only. Any other encoder (multimodal, diffusion,
# ...) learns from a dataset's training interactions, so its embeddings must come from this very
# dataset: made on the full data, they would carry the cold items' held-out behaviour.
CONTENT_ONLY_ENCODERS = frozenset({"text"})


@dataclass(frozen=True)
class ContentKNNConfig:
    """history: how many of the user's most recent items form the query;
    decay: the item j steps before the last weighs decay ** j (1.0 = the plain mean)."""

    # Defaults: the variant `--tune` picked on Amazon Beauty's validation split with 10% of the
    # items cold, MiniLM text embeddings, history excluded (bench/results/content-knn-beauty/).
    history: int = 10
    decay: float = 0.4

    def __post_init__(self) -> None:
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"history must be an integer >= 1, got {self.history!r}")
        if isinstance(self.decay, bool) or not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay!r}")


def load_item_embeddings(path: str | Path, dataset) -> tuple[np.ndarray, dict]:
    """(float32 [num_items, D], embed.json or {}) from a ``genrec embed`` folder or its ``.npy``.

    Checked: one finite row per item of ``dataset``; when embed.json is there, that it was made
    for these items (item ids in index order) and, for an encoder that learns from interactions,
    from this dataset's training part (its fingerprint). EmbeddingError names the file.
    """
    path = Path(path)
    if path.is_file() and path.name == EMBEDDINGS_FILE and (path.parent / META_FILE).is_file():
        path = path.parent  # the file of an embed folder: check what its embed.json records
    item_ids = dataset.item_table(columns=["item_id"]).column("item_id").to_pylist()
    array, meta = load_embeddings(path, num_items=dataset.num_items, item_ids_hash=item_ids_sha256(item_ids))
    encoder = meta.get("encoder")
    recorded = meta.get("dataset_manifest_sha256")
    if meta and encoder not in CONTENT_ONLY_ENCODERS and recorded != dataset.fingerprint:
        raise EmbeddingError(
            f"{path / META_FILE}: encoder {encoder!r} learns from interactions, and these embeddings "
            f"were made from another dataset ({meta.get('dataset', '?')}, fingerprint "
            f"{str(recorded)[:12]}... vs {dataset.fingerprint[:12]}... here); they may have seen this "
            "dataset's held-out or cold items. Rerun `genrec embed` on this dataset"
        )
    return array, meta


def _unit_rows(array: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms > 0, norms, 1)).astype(np.float32)


def top_k_by_score(scores: np.ndarray, k: int) -> np.ndarray:
    """int64 [B, k]: each row's k best columns, by score descending then column ascending (exact
    with ties: every column tying with the k-th best is considered); -1 pads when k > columns."""
    b, n = scores.shape
    out = np.full((b, k), -1, dtype=np.int64)
    kk = min(k, n)
    if b == 0 or kk == 0:
        return out
    kth = np.partition(scores, n - kk, axis=1)[:, n - kk]
    rows, cols = np.nonzero(scores >= kth[:, None])
    order = np.lexsort((cols, -scores[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    place = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = place < kk
    out[rows[keep], place[keep]] = cols[keep]
    return out


class ContentKNN:
    """Cosine between each item's embedding and a recency-weighted mean of the user's last items."""

    name = "content-knn"

    def __init__(
        self,
        embeddings: np.ndarray,
        config: ContentKNNConfig | None = None,
        *,
        batch_size: int = 256,
        source: dict | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.cfg = config or ContentKNNConfig()
        self.batch_size = batch_size
        self.source = dict(source or {})
        embeddings = check_embeddings(embeddings, source=self.source.get("embeddings", "embeddings"))
        self.num_items = embeddings.shape[0]
        self.unit = _unit_rows(embeddings)
        # Score each distinct row once: equal embeddings then get bitwise-equal scores, which the
        # tie rule orders by index (a BLAS may round the same dot product differently by position).
        distinct, inverse = np.unique(self.unit, axis=0, return_inverse=True)
        if len(distinct) == self.num_items:  # no duplicates: item order, no gather
            self.distinct, self.inverse = np.ascontiguousarray(self.unit.T), None
        else:  # [D, M] distinct rows (sorted), and each item's row among them
            self.distinct, self.inverse = np.ascontiguousarray(distinct.T), inverse.reshape(-1)

    @classmethod
    def from_dataset(
        cls, dataset, embeddings: str | Path, config: ContentKNNConfig | None = None, **kwargs
    ) -> ContentKNN:
        """Embeddings read and checked by :func:`load_item_embeddings` for ``dataset``."""
        array, meta = load_item_embeddings(embeddings, dataset)
        source = {
            "embeddings": str(embeddings),
            "encoder": meta.get("encoder"),
            "model": meta.get("model"),
            "dimension": int(array.shape[1]),
            "embeddings_sha256": array_sha256(array),
        }
        return cls(array, config, source=source, **kwargs)

    def with_config(self, config: ContentKNNConfig) -> ContentKNN:
        """The same embeddings (shared, not copied) under another configuration."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.cfg = config
        return other

    def config(self) -> dict:
        return {**asdict(self.cfg), **self.source}

    def queries(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(histories), D]: each history's unit query vector (zero when it has none)."""
        n, decay = self.cfg.history, self.cfg.decay
        index = np.zeros((len(histories), n), dtype=np.int64)
        weight = np.zeros((len(histories), n), dtype=np.float32)
        for r, h in enumerate(histories):
            recent = np.asarray(h, dtype=np.int64)[max(0, len(h) - n) :][::-1]  # newest first
            if len(recent) and (recent.min() < 0 or recent.max() >= self.num_items):
                raise ValueError(
                    f"history row {r}: item indices must be in 0..{self.num_items - 1}, got {recent[::-1].tolist()}"
                )
            index[r, : len(recent)] = recent
            weight[r, : len(recent)] = decay ** np.arange(len(recent))
        summed = np.einsum("bn,bnd->bd", weight, self.unit[index])
        return _unit_rows(summed)

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [len(histories), num_items]: cosine of every item with each query (dense)."""
        s = self.queries(histories) @ self.distinct
        return s if self.inverse is None else s[:, self.inverse]

    def recommend(self, histories: Sequence[np.ndarray], k: int, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(histories), k), dtype=np.int64)
        for lo in range(0, len(histories), self.batch_size):
            chunk = histories[lo : lo + self.batch_size]
            out[lo : lo + len(chunk)] = top_k_by_score(self.scores(chunk), k)
        return out


def content_knn_grid() -> list[ContentKNNConfig]:
    """The variants ``genrec eval --model content-knn --tune`` tries, simpler first (fewer items,
    then the plain mean before steeper decays); one item has no decay to choose."""
    grid = [ContentKNNConfig(1, 1.0)]
    for history in (2, 3, 5, 10, 20):
        for decay in (1.0, 0.8, 0.6, 0.4, 0.2):
            grid.append(ContentKNNConfig(history, decay))
    return grid


def tune_content_knn(
    model: ContentKNN,
    dataset,
    grid: Sequence[ContentKNNConfig] | None = None,
    metric: str = "ndcg@10",
    ks: Sequence[int] = (5, 10, 20),
    *,
    exclude_history: bool = False,
    progress: bool = False,
) -> tuple[ContentKNNConfig, list[dict]]:
    """Evaluate each variant on the validation split (as the test will be run: pass the same
    ``exclude_history``); return the best by ``metric`` and the table. Ties keep the earlier variant."""

    grid = list(grid or content_knn_grid())
    if not grid:
        raise ValueError("the tuning grid is empty")
    _, _, cutoff = metric.partition("@")
    ks = tuple(sorted({int(k) for k in ks} | ({int(cutoff)} if cutoff.isdigit() else set())))
    shown = ("recall@10", "ndcg@10", "cold_target/recall@10", "cold_target/ndcg@10")
    table = []
    for cfg in grid:
        result = evaluate(
            model.with_config(cfg), dataset, "valid", ks, exclude_history=exclude_history, progress=progress
        )
        if metric not in result.metrics:
            raise ValueError(f"metric {metric!r} is not computed; choose one of {', '.join(result.metrics)}")
        row = {**asdict(cfg), **{m: result.metrics[m] for m in (*shown, metric) if m in result.metrics}}
        table.append(row)
    best = max(range(len(grid)), key=lambda i: (table[i][metric], -i))
    return grid[best], table
