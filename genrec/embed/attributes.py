"""Categorical attribute embeddings (brand, categories, any string or list-of-string column).

Each item becomes a bag of ``column=value`` tokens (values compared case-insensitively). Tokens
on fewer than ``min_count`` items are dropped (a value only one item has says nothing about
which items are alike), the rest are weighted by inverse document frequency (a category every
item has weighs nothing), each column's block is L2-normalised so a long category path does not
drown the brand, and a seeded truncated SVD (latent semantic analysis) maps the sparse bag to
``dim`` dense dimensions. Items with no kept token are absent from this modality.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
        df = Counter(v for values in per_item for v in values)
        kept = sorted(
            v for v, c in df.items() if c >= min_count and c < num_items
        )  # every-item values: idf 0
        index = {v: len(vocabulary) + j for j, v in enumerate(kept)}
        vocabulary += [f"{column}={v}" for v in kept]
        idf = {v: float(np.log(num_items / df[v])) for v in kept}
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
    u, s, _ = truncated_svd(matrix, dim, seed=seed)
    values = (u * s).float().numpy()
    total = float(torch.sparse.sum(matrix.pow(2)))
    info = {
        "columns": list(columns),
        "vocabulary": len(vocabulary),
        "min_count": min_count,
        "explained_variance": float((s**2).sum() / total) if total > 0 else 0.0,
        "per_column": stats,
    }
    return ModalityFeatures("attributes", values, present, info)
