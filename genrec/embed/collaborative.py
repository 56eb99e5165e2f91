"""Collaborative item embeddings: what interactions say about items, from the training split only.

Items that users take up close together in time are alike in behaviour. Pairs within ``window``
positions of each other in a user's training sequence count ``1 / distance`` (symmetrically); the
counts become a positive pointwise mutual information matrix (shifted by ``log(shift)``, context
counts smoothed by the power ``context_power``, as in Levy & Goldberg's analysis of word2vec),
and a seeded truncated SVD gives ``U sqrt(S)`` as the embedding. Only
``dataset.train_bounds()`` is read, so validation and test items never leak in; items without a
positive association in the training part (cold items, items seen only as held-out targets)
are absent from this modality.
"""

from __future__ import annotations

import numpy as np

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.factorize import truncated_svd
from genrec.embed.modality import ModalityFeatures


def training_sequences(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The training part as (items, user) flat arrays, each user's items contiguous and chronological."""
    starts, ends = dataset.train_bounds()
    lengths = np.maximum(ends - starts, 0)
    user = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    positions = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
        int(lengths.sum())
    )
    return dataset.items[positions], user


def _sparse(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, num_items: int):
    import scipy.sparse as sp

    return sp.csr_matrix((vals, (rows, cols)), shape=(num_items, num_items))  # duplicates summed


def cooccurrence(items: np.ndarray, user: np.ndarray, num_items: int, window: int):
    """Symmetric sparse counts [num_items, num_items] (scipy CSR, float64): pairs within ``window``
    steps, weight 1/distance. Built one distance at a time, so memory follows the distinct pairs."""
    index = np.int32 if num_items < 2**31 else np.int64
    items = items.astype(index, copy=False)
    counts = _sparse(np.zeros(0, index), np.zeros(0, index), np.zeros(0), num_items)
    for d in range(1, window + 1):
        same = user[:-d] == user[d:]
        a, b = items[:-d][same], items[d:][same]
        keep = a != b  # an item repeated next to itself says nothing about other items
        a, b = a[keep], b[keep]
        step = _sparse(a, b, np.full(len(a), 1.0 / d), num_items)
        counts = counts + step + step.T
    counts.sort_indices()
    return counts


def ppmi(counts, *, shift: float = 1.0, context_power: float = 0.75, block: int = 1 << 23):
    """Positive shifted PMI of a sparse count matrix (scipy CSR; zeros and negative associations
    dropped), computed ``block`` non-zeros of rows at a time."""
    import scipy.sparse as sp

    counts = sp.csr_matrix(counts)
    row = np.asarray(counts.sum(axis=1)).ravel()
    context = row**context_power
    with np.errstate(divide="ignore"):  # rows without counts: never read
        log_row, log_context = np.log(row), np.log(context)
        # log(c * total) - log(row_i) - log(context_j * total / sum(context)) - log(shift)
        offset = np.log(context.sum()) - np.log(shift)
    indptr, values = counts.indptr, np.empty(counts.nnz)
    lo = 0
    while lo < counts.shape[0]:  # whole rows per block
        hi = max(lo + 1, int(np.searchsorted(indptr, indptr[lo] + block, side="right")) - 1)
        hi = min(hi, counts.shape[0])
        span = slice(indptr[lo], indptr[hi])
        rows = np.repeat(np.arange(lo, hi), np.diff(indptr[lo : hi + 1]))
        pmi = np.log(counts.data[span])
        pmi -= log_row[rows]
        pmi -= log_context[counts.indices[span]]
        pmi += offset
        values[span] = pmi
        lo = hi
    out = sp.csr_matrix((values, counts.indices, indptr), shape=counts.shape)
    out.data[out.data <= 0] = 0
    out.eliminate_zeros()
    return out


def embed_collaborative(
    dataset,
    *,
    dim: int = 64,
    window: int = 3,
    shift: float = 1.0,
    context_power: float = 0.75,
    seed: int = 0,
) -> ModalityFeatures:
    """Collaborative embeddings [num_items, dim] of a prepared dataset, from its training part only."""
    if dim < 1 or window < 1:
        raise ValueError(f"collaborative dim and window must be >= 1, got dim={dim}, window={window}")
    if shift <= 0:
        raise ValueError(f"collaborative shift must be > 0, got {shift}")
    num_items = dataset.num_items
    items, user = training_sequences(dataset)
    matrix = ppmi(cooccurrence(items, user, num_items, window), shift=shift, context_power=context_power)
    present = np.diff(matrix.indptr) > 0
    if present.sum() < 2:
        raise EmbeddingError(
            f"{dataset.path}: the training part has fewer than 2 items that co-occur within {window} steps; "
            "no collaborative signal to learn"
        )
    u, s, _ = truncated_svd(matrix, dim, seed=seed)
    values = (u * s.sqrt()).numpy()
    if values.shape[1] < dim:  # fewer associated items than dimensions: pad the unused directions
        values = np.pad(values, ((0, 0), (0, dim - values.shape[1])))
    trained = np.bincount(items, minlength=num_items) > 0
    info = {
        "source": "training split only",
        "window": window,
        "shift": shift,
        "context_power": context_power,
        "items_in_training": int(trained.sum()),
        "items_with_embedding": int(present.sum()),
        "nonzeros": int(matrix.nnz),
    }
    return ModalityFeatures("collaborative", values, present, info)
