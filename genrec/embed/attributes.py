"""Categorical attribute embeddings (brand, categories, any string or list-of-string column).

Each item becomes a bag of ``column=value`` tokens (values compared case-insensitively). Tokens
on fewer than ``min_count`` items are dropped (a value only one item has says nothing about
which items are alike), the rest are weighted by inverse document frequency (a category every
item has weighs nothing), each column's block is L2-normalised so a long category path does not
drown the brand, and a seeded truncated SVD (latent semantic analysis) maps the sparse bag to
``dim`` dense dimensions. Items with no kept token are absent from this modality.

:func:`fit_attributes` also returns the fitted :class:`AttributeModel` (kept values, their idf,
the SVD's right factor), which embeds items added later the same way (folding them into the
factorization) without refitting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.factorize import truncated_svd
from genrec.embed.modality import ModalityFeatures

DEFAULT_COLUMNS = ("brand", "categories")


def _normalise(value) -> str | None:
    text = " ".join(str(value).split()).lower()
    return text or None


def item_tokens(
    item_table, columns: Sequence[str], where: str = "items.parquet"
) -> dict[str, list[list[str]]]:
    """Per column, each item's distinct attribute values (lower-cased, whitespace collapsed)."""
    missing = [c for c in columns if c not in item_table.column_names]
    if missing:
        raise EmbeddingError(
            f"{where}: no attribute column(s) {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(item_table.column_names)})"
        )
    out: dict[str, list[list[str]]] = {}
    for column in columns:
        rows = []
        for value in item_table.column(column).to_pylist():
            values = value if isinstance(value, list) else [value]
            seen: list[str] = []
            for v in values:
                if v is None:
                    continue
                if isinstance(v, (list, dict)):
                    raise EmbeddingError(
                        f"{where}: attribute column {column!r} must hold strings or lists of strings"
                    )
                text = _normalise(v)
                if text is not None and text not in seen:
                    seen.append(text)
            rows.append(seen)
        out[column] = rows
    return out


def _kept_values(
    per_item: list[list[str]], num_items: int, min_count: int
) -> tuple[Counter, list[str], dict[str, float]]:
    """(document frequency, the kept values sorted, their idf) of one column's values."""
    df = Counter(v for values in per_item for v in values)
    kept = sorted(v for v, c in df.items() if c >= min_count and c < num_items)  # every-item values: idf 0
    return df, kept, {v: float(np.log(num_items / df[v])) for v in kept}


def attribute_matrix(
    tokens: dict[str, list[list[str]]], num_items: int, min_count: int
) -> tuple[torch.Tensor, list[str], dict]:
    """Sparse tf-idf bag [num_items, vocabulary], the vocabulary (``column=value``), and per-column counts."""
    rows, cols, vals, vocabulary = [], [], [], []
    stats = {}
    for column, per_item in tokens.items():
        if len(per_item) != num_items:
            raise EmbeddingError(
                f"attribute column {column!r} has {len(per_item)} rows for {num_items} items"
            )
        df, kept, idf = _kept_values(per_item, num_items, min_count)
        index = {v: len(vocabulary) + j for j, v in enumerate(kept)}
        vocabulary += [f"{column}={v}" for v in kept]
        with_any = 0
        for i, values in enumerate(per_item):
            entries = [(index[v], idf[v]) for v in values if v in index]
            if not entries:
                continue
            with_any += 1
            norm = float(np.sqrt(sum(w * w for _, w in entries)))
            for j, w in entries:
                rows.append(i)
                cols.append(j)
                vals.append(w / norm)
        stats[column] = {"values": len(df), "kept_values": len(kept), "items_with": with_any}
    indices = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
    matrix = torch.sparse_coo_tensor(
        indices, torch.tensor(vals, dtype=torch.float64), (num_items, len(vocabulary)), check_invariants=True
    )
    return matrix.coalesce(), vocabulary, stats


def embed_attributes(
    item_table,
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    dim: int = 64,
    min_count: int = 2,
    seed: int = 0,
    where: str = "items.parquet",
) -> ModalityFeatures:
    """Attribute embeddings [num_items, min(dim, vocabulary)] of ``columns`` of the item table."""
    return fit_attributes(item_table, columns=columns, dim=dim, min_count=min_count, seed=seed, where=where)[
        0
    ]


def fit_attributes(
    item_table,
    *,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    dim: int = 64,
    min_count: int = 2,
    seed: int = 0,
    where: str = "items.parquet",
) -> tuple[ModalityFeatures, AttributeModel]:
    """:func:`embed_attributes`, and the fitted model that embeds new items the same way."""
    if dim < 1:
        raise ValueError(f"attribute dim must be >= 1, got {dim}")
    if min_count < 1:
        raise ValueError(f"attribute min_count must be >= 1, got {min_count}")
    if not columns:
        raise ValueError("attribute encoder needs at least one column")
    num_items = item_table.num_rows
    tokens = item_tokens(item_table, columns, where)
    matrix, vocabulary, stats = attribute_matrix(tokens, num_items, min_count)
    present = np.zeros(num_items, dtype=bool)
    present[matrix.indices()[0].unique().numpy()] = True
    if not vocabulary or not present.any():
        raise EmbeddingError(
            f"{where}: no attribute value of {', '.join(columns)} is shared by {min_count} or more items; "
            "nothing to embed (lower attributes.min_count or leave attributes out)"
        )
    u, s, v = truncated_svd(matrix, dim, seed=seed)
    values = (u * s).float().numpy()
    total = float(torch.sparse.sum(matrix.pow(2)))
    info = {
        "columns": list(columns),
        "vocabulary": len(vocabulary),
        "min_count": min_count,
        "explained_variance": float((s**2).sum() / total) if total > 0 else 0.0,
        "per_column": stats,
    }
    idf: list[float] = []  # in vocabulary order: columns in turn, each column's kept values sorted
    for per_item in tokens.values():
        _, kept, column_idf = _kept_values(per_item, num_items, min_count)
        idf += [column_idf[value] for value in kept]
    model = AttributeModel(tuple(columns), tuple(vocabulary), np.array(idf), v.numpy())
    return ModalityFeatures("attributes", values, present, info), model


@dataclass(frozen=True)
class AttributeModel:
    """A fitted attribute embedding: embeds any item table's rows as :func:`fit_attributes` embedded
    the items it was fitted on. A new item's tf-idf row (the fitted vocabulary and idf; values the
    fit did not keep are ignored) is projected onto the SVD's right factor (``row @ V``, folding it
    into the factorization); for the fitted items this is their own embedding ``U S`` wherever the
    randomized SVD captured the matrix exactly (up to rounding), and its best approximation otherwise.
    """

    columns: tuple[str, ...]
    vocabulary: tuple[str, ...]
    """``column=value`` per tf-idf column."""
    idf: np.ndarray
    """float64 [vocabulary]."""
    projection: np.ndarray
    """float64 [vocabulary, dim]: the right singular vectors V."""

    def __post_init__(self) -> None:
        v = len(self.vocabulary)
        if self.idf.shape != (v,) or self.projection.ndim != 2 or self.projection.shape[0] != v:
            raise EmbeddingError(
                f"attribute model: {v} vocabulary entries, idf {list(self.idf.shape)}, projection "
                f"{list(self.projection.shape)}: they must agree"
            )

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def transform(self, item_table, where: str = "items.parquet") -> ModalityFeatures:
        """Attribute features [rows, dim] of ``item_table`` (absent where no fitted value occurs)."""
        tokens = item_tokens(item_table, self.columns, where)
        index = {}
        for j, entry in enumerate(self.vocabulary):
            column, _, value = entry.partition("=")  # column names hold no "="; values may
            index[(column, value)] = j
        rows = np.zeros((item_table.num_rows, len(self.vocabulary)))
        for column, per_item in tokens.items():
            for i, values in enumerate(per_item):
                entries = [index[(column, v)] for v in values if (column, v) in index]
                if not entries:
                    continue
                weights = self.idf[entries]
                rows[i, entries] = weights / np.sqrt(np.sum(weights * weights))
        present = rows.any(axis=1)
        values = (rows @ self.projection).astype(np.float32)
        return ModalityFeatures("attributes", values, present, {"columns": list(self.columns)})

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idf": torch.from_numpy(self.idf), "projection": torch.from_numpy(self.projection)}

    def spec(self) -> dict:
        return {"columns": list(self.columns), "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_state(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> AttributeModel:
        return cls(
            tuple(spec["columns"]),
            tuple(spec["vocabulary"]),
            tensors["idf"].double().numpy(),
            tensors["projection"].double().numpy(),
        )
