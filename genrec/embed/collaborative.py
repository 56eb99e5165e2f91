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
import torch

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


def cooccurrence(items: np.ndarray, user: np.ndarray, num_items: int, window: int) -> torch.Tensor:
    """Symmetric sparse counts [num_items, num_items]: pairs within ``window`` steps, weight 1/distance."""
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = user[:-d] == user[d:]
        a, b = items[:-d][same], items[d:][same]
        keep = a != b  # an item repeated next to itself says nothing about other items
        a, b = a[keep], b[keep]
        rows += [a, b]
        cols += [b, a]
        vals.append(np.full(2 * len(a), 1.0 / d))
    if not rows:
        return torch.sparse_coo_tensor(
            torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (num_items, num_items)
        )
    index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    values = torch.from_numpy(np.concatenate(vals))
    return torch.sparse_coo_tensor(
        index, values, (num_items, num_items), dtype=torch.float64, check_invariants=True
    ).coalesce()


def ppmi(counts: torch.Tensor, *, shift: float = 1.0, context_power: float = 0.75) -> torch.Tensor:
    """Positive shifted PMI of a sparse count matrix (zeros and negative associations dropped)."""
    row = torch.sparse.sum(counts, dim=1).to_dense()
    context = row.pow(context_power)
    (i, j), c = counts.indices(), counts.values()
    total = c.sum()
    pmi = (
        torch.log(c * total)
        - torch.log(row[i])
        - torch.log(context[j] * total / context.sum())
        - np.log(shift)
    )
    keep = pmi > 0
    return torch.sparse_coo_tensor(
        torch.stack([i[keep], j[keep]]), pmi[keep], counts.shape, dtype=torch.float64, check_invariants=True
    ).coalesce()


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
    counts = cooccurrence(items, user, num_items, window)
    matrix = ppmi(counts, shift=shift, context_power=context_power)
    present = np.zeros(num_items, dtype=bool)
    present[matrix.indices()[0].numpy()] = True
    if present.sum() < 2:
        raise EmbeddingError(
            f"{dataset.path}: the training part has fewer than 2 items that co-occur within {window} steps; "
            "no collaborative signal to learn"
        )
    u, s, _ = truncated_svd(matrix, dim, seed=seed)
    values = (u * s.sqrt()).float().numpy()
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
        "nonzeros": int(matrix.values().numel()),
    }
    return ModalityFeatures("collaborative", values, present, info)
