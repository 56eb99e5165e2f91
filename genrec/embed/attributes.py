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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.factorize import truncated_svd
from genrec.embed.modality import ModalityFeatures

DEFAULT_COLUMNS = ("brand", "categories")


def _normalise(value) -> str | None:
    text = " ".join(str(value).split()).lower()
    return text or None


@dataclass(frozen=True)
class ColumnTokens:
    """One attribute column's distinct (item, value) pairs, values lower-cased, whitespace collapsed."""

    items: np.ndarray
    """int64 [P]: the item (row) of each pair, ascending."""
    codes: np.ndarray
    """int64 [P]: the pair's value, an index into ``values``."""
    values: list[str]
    """The column's distinct normalised values."""


def _check_type(dtype, column: str, where: str) -> None:
    if pa.types.is_nested(dtype) or (pa.types.is_dictionary(dtype) and pa.types.is_nested(dtype.value_type)):
        raise EmbeddingError(f"{where}: attribute column {column!r} must hold strings or lists of strings")


def column_tokens(item_table, column: str, where: str = "items.parquet") -> ColumnTokens:
    """The distinct values of each item in ``column`` (a scalar or list column), vectorised: only
    the column's distinct raw values pass through Python (to be normalised)."""
    data = item_table.column(column)
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    if (
        pa.types.is_list(data.type)
        or pa.types.is_large_list(data.type)
        or pa.types.is_fixed_size_list(data.type)
    ):
        parents = np.asarray(pc.list_parent_indices(data), dtype=np.int64)
        data = pc.list_flatten(data)
    else:
        parents = np.arange(len(data), dtype=np.int64)
    _check_type(data.type, column, where)
    if isinstance(data, pa.ChunkedArray):
        data = data.combine_chunks()
    valid = np.asarray(data.is_valid(), dtype=bool)
    parents, data = parents[valid], data.filter(pa.array(valid))
    if pa.types.is_dictionary(data.type):
        data = data.cast(data.type.value_type)
    try:
        encoded = pc.dictionary_encode(data)
        raw, codes = encoded.dictionary.to_pylist(), np.asarray(encoded.indices, dtype=np.int64)
    except pa.ArrowNotImplementedError:  # a type arrow cannot dictionary-encode: distinct values in Python
        index: dict = {}
        codes = np.array([index.setdefault(v, len(index)) for v in data.to_pylist()], dtype=np.int64)
        raw = list(index)
    values: dict[str, int] = {}
    normalised = np.array(
        [-1 if (t := _normalise(v)) is None else values.setdefault(t, len(values)) for v in raw] or [0],
        dtype=np.int64,
    )
    codes = normalised[codes] if len(codes) else codes
    keep = codes >= 0
    pairs = np.sort(parents[keep] * max(len(values), 1) + codes[keep])
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs  # distinct
    width = max(len(values), 1)
    return ColumnTokens(pairs // width, pairs % width, list(values))


def item_tokens(item_table, columns: Sequence[str], where: str = "items.parquet") -> dict[str, ColumnTokens]:
    """Per column, each item's distinct attribute values (see :func:`column_tokens`)."""
    missing = [c for c in columns if c not in item_table.column_names]
    if missing:
        raise EmbeddingError(
            f"{where}: no attribute column(s) {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(item_table.column_names)})"
        )
    return {column: column_tokens(item_table, column, where) for column in columns}


def _kept_values(
    tokens: ColumnTokens, num_items: int, min_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document frequency per value, the kept values' codes in sorted-value order, their idf)."""
    df = np.bincount(tokens.codes, minlength=len(tokens.values))
    eligible = np.flatnonzero((df >= min_count) & (df < num_items))  # every-item values: idf 0
    kept = np.array(sorted(eligible.tolist(), key=tokens.values.__getitem__), dtype=np.int64)
    return df, kept, np.log(num_items / df[kept]) if len(kept) else np.zeros(0)


def _weighted_rows(
    tokens: ColumnTokens, column_of: np.ndarray, idf: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, weights) of one column's block: kept values' idf, each item's block unit length.

    ``column_of`` maps a value code to a column (-1: not kept); ``idf`` is per column."""
    cols = column_of[tokens.codes] if len(tokens.codes) else np.zeros(0, np.int64)
    keep = cols >= 0
    rows, cols = tokens.items[keep], cols[keep]
    weights = idf[cols]
    norm = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=int(rows.max(initial=-1)) + 1))
    return rows, cols, weights / norm[rows]


def attribute_matrix(
    tokens: dict[str, ColumnTokens], num_items: int, min_count: int
) -> tuple[object, list[str], dict, np.ndarray]:
    """Sparse tf-idf bag [num_items, vocabulary] (scipy CSR), the vocabulary (``column=value``),
    per-column counts and the idf per vocabulary entry."""
    rows, cols, vals, vocabulary, idfs = [], [], [], [], []
    stats = {}
    for column, tok in tokens.items():
        if len(tok.items) and tok.items.max() >= num_items:
            raise EmbeddingError(f"attribute column {column!r} has rows beyond the {num_items} items")
        df, kept, idf = _kept_values(tok, num_items, min_count)
        column_of = np.full(len(tok.values), -1, dtype=np.int64)
        column_of[kept] = np.arange(len(kept))
        r, c, w = _weighted_rows(tok, column_of, idf)
        rows.append(r)
        cols.append(c + len(vocabulary))
        vocabulary += [f"{column}={tok.values[c]}" for c in kept]
        idfs.append(idf)
        vals.append(w)
        stats[column] = {
            "values": int((df > 0).sum()),
            "kept_values": len(kept),
            "items_with": int(np.count_nonzero(np.bincount(r))),
        }
    empty = [np.zeros(0, np.int64)]
    import scipy.sparse as sp  # lazily: the GPU machine's decoding path never embeds

    matrix = sp.csr_matrix(
        (np.concatenate(vals or empty), (np.concatenate(rows or empty), np.concatenate(cols or empty))),
        shape=(num_items, len(vocabulary)),
        dtype=np.float64,
    )
    matrix.sort_indices()
    return matrix, vocabulary, stats, np.concatenate(idfs or [np.zeros(0)])


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
    matrix, vocabulary, stats, idf = attribute_matrix(tokens, num_items, min_count)
    present = np.diff(matrix.indptr) > 0
    if not vocabulary or not present.any():
        raise EmbeddingError(
            f"{where}: no attribute value of {', '.join(columns)} is shared by {min_count} or more items; "
            "nothing to embed (lower attributes.min_count or leave attributes out)"
        )
    u, s, v = truncated_svd(matrix, dim, seed=seed)
    values = (u * s).numpy()
    total = float(np.square(matrix.data).sum())
    info = {
        "columns": list(columns),
        "vocabulary": len(vocabulary),
        "min_count": min_count,
        "explained_variance": float((s**2).sum() / total) if total > 0 else 0.0,
        "per_column": stats,
    }
    model = AttributeModel(tuple(columns), tuple(vocabulary), idf, v.double().numpy())
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
        parts = []
        for column, tok in tokens.items():
            column_of = np.array([index.get((column, v), -1) for v in tok.values] or [-1], dtype=np.int64)
            parts.append(_weighted_rows(tok, column_of, self.idf))
        rows, cols, vals = (np.concatenate(p) for p in zip(*parts, strict=True))
        import scipy.sparse as sp

        matrix = sp.csr_matrix((vals, (rows, cols)), shape=(item_table.num_rows, len(self.vocabulary)))
        present = np.diff(matrix.indptr) > 0
        values = np.asarray(matrix @ self.projection).astype(np.float32)
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
