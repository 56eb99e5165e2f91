"""The scipy co-occurrence and PPMI matrices equal the torch COO computation they replaced (kept below
as the reference) on random interaction sequences, whatever the row-block size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.embed.collaborative import cooccurrence, ppmi


def reference_cooccurrence(items, user, num_items, window):
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = user[:-d] == user[d:]
        a, b = items[:-d][same], items[d:][same]
        keep = a != b
        a, b = a[keep], b[keep]
        rows += [a, b]
        cols += [b, a]
        vals.append(np.full(2 * len(a), 1.0 / d))
    index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    values = torch.from_numpy(np.concatenate(vals))
    return torch.sparse_coo_tensor(
        index, values, (num_items, num_items), dtype=torch.float64, check_invariants=True
    ).coalesce()


def reference_ppmi(counts, shift, context_power):
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
    return (
        torch.sparse_coo_tensor(torch.stack([i[keep], j[keep]]), pmi[keep], counts.shape).to_dense().numpy()
    )


def random_sequences(seed: int, users: int, num_items: int):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, size=users)
    user = np.repeat(np.arange(users), lengths)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 1.1  # Zipf-like: repeats and heavy items
    items = rng.choice(num_items, size=int(lengths.sum()), p=popularity / popularity.sum())
    return items.astype(np.int64), user


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize(
    ("shift", "context_power", "block"), [(1.0, 0.75, 1 << 23), (2.0, 1.0, 7), (0.5, 0.5, 1)]
)
def test_sparse_counts_and_ppmi_equal_the_torch_reference(seed, window, shift, context_power, block):
    num_items = [15, 60, 200][seed % 3]
    items, user = random_sequences(seed, users=[20, 80, 300][seed % 3], num_items=num_items)
    counts = cooccurrence(items, user, num_items, window)
    ref_counts = reference_cooccurrence(items, user, num_items, window)
    np.testing.assert_allclose(counts.toarray(), ref_counts.to_dense().numpy(), rtol=1e-12, atol=0)
    got = ppmi(counts, shift=shift, context_power=context_power, block=block).toarray()
    want = reference_ppmi(ref_counts, shift, context_power)
    clear = np.abs(want) > 1e-9  # an association of exactly zero may round to either side
    np.testing.assert_allclose(got[clear], want[clear], rtol=1e-10)
    assert np.all(np.abs(got[~clear]) <= 1e-9)
    assert np.all(got >= 0)


def test_no_pairs_give_an_empty_matrix():
    counts = cooccurrence(np.array([1, 1, 2]), np.array([0, 0, 1]), 4, 2)  # a repeat and a lone item
    assert counts.shape == (4, 4) and counts.nnz == 0
    assert ppmi(counts).nnz == 0
