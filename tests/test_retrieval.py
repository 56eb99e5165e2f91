"""Inner-product top-K: every backend against a brute-force ranking, approximate indexes by recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec import retrieval as R
from genrec.retrieval import InnerProductIndex, RetrievalError
from genrec.serve.inner_product import InnerProductRecommender

needs_faiss = pytest.mark.skipif(not R.faiss_available(), reason="faiss is not installed")


def brute_force(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def random_vectors(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_exact_search_matches_brute_force(backend):
    items, queries = random_vectors(500, 16, 0), random_vectors(37, 16, 1)
    index = InnerProductIndex(items, backend=backend)
    scores, ids = index.search(queries, 10)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (37, 10)
    np.testing.assert_array_equal(ids, brute_force(queries, items, 10))
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ items.T, ids, axis=1), rtol=1e-5, atol=1e-5
    )
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_torch_search_in_small_chunks_and_torch_inputs():
    items, queries = random_vectors(300, 8, 2), random_vectors(50, 8, 3)
    index = InnerProductIndex(torch.from_numpy(items), backend="torch", query_chunk=7)
    _, ids = index.search(torch.from_numpy(queries), 5)
    np.testing.assert_array_equal(ids, brute_force(queries, items, 5))


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_fewer_items_than_k_pads_with_minus_one(backend):
    items = random_vectors(3, 4, 4)
    scores, ids = InnerProductIndex(items, backend=backend).search(random_vectors(2, 4, 5), 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2]


@needs_faiss
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_most_true_neighbours(kind):
    # Clustered items, as learned embeddings are: 20 centres, 2,000 items around them.
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    items = centres[rng.integers(20, size=2000)] + 0.3 * rng.standard_normal((2000, 16)).astype(np.float32)
    queries = centres[rng.integers(20, size=100)] + 0.3 * rng.standard_normal((100, 16)).astype(np.float32)
    index = InnerProductIndex(items, kind=kind, ef_construction=64, ef_search=64, nprobe=8)
    assert index.backend == "faiss" and index.describe()["kind"] == kind
    _, ids = index.search(queries, 10)
    truth = brute_force(queries, items, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist(), strict=True)])
    assert recall >= 0.9


def test_auto_choices_and_clear_errors(monkeypatch):
    items = random_vectors(50, 4, 7)
    assert InnerProductIndex(items, kind="auto").kind == "exact"  # small catalogue: exact
    monkeypatch.setattr(R, "faiss_available", lambda: False)  # the GPU machine: no faiss
    index = InnerProductIndex(items, kind="auto", approximate_above=10)
    assert (index.kind, index.backend) == ("exact", "torch")
    with pytest.raises(RetrievalError, match="needs the faiss package"):
        InnerProductIndex(items, backend="faiss")
    with pytest.raises(RetrievalError, match="only the faiss backend"):
        InnerProductIndex(items, kind="hnsw", backend="torch")
    with pytest.raises(RetrievalError, match="dimension"):
        index.search(random_vectors(2, 5, 8), 3)
    with pytest.raises(RetrievalError, match="not one of"):
        InnerProductIndex(items, kind="lsh")


class _BagOfItems(torch.nn.Module):
    """A stand-in model: a history's vector is the sum of its items' vectors."""

    def __init__(self, num_items: int, dim: int = 8, max_history: int = 4) -> None:
        super().__init__()
        self.num_items, self.max_history = num_items, max_history
        self.emb = torch.nn.Embedding(num_items, dim)

    def item_vectors(self):
        return self.emb.weight

    def user_vectors(self, history, history_len):
        valid = torch.arange(history.shape[1])[None, :] < history_len[:, None]
        return (self.emb(history) * valid[:, :, None]).sum(1)


def test_recommender_ranks_by_the_models_scores_and_keeps_recent_items():
    torch.manual_seed(0)
    model = _BagOfItems(40)
    rec = InnerProductRecommender(model, backend="torch", batch_users=3)
    histories = [np.array([1, 2, 3, 4, 5, 6]), np.array([7]), np.array([9, 9, 10])]
    got = rec.recommend(histories, 6, np.arange(3))
    weights = model.emb.weight.detach().numpy()
    for row, h in zip(got, histories, strict=True):
        query = weights[h[-4:]].sum(0, keepdims=True)  # only the 4 most recent items count
        np.testing.assert_array_equal(row, brute_force(query, weights, 6)[0])
    # Histories as ranges of a flat array: [1, 2] and [7]; the first row's target is its top item.
    top = rec.recommend([np.array([1, 2])], 1)[0, 0]
    miss = next(i for i in range(40) if i not in rec.recommend([np.array([7])], 6)[0])
    sums = rec.ranking_sums(
        np.array([1, 2, 7]), np.array([0, 2]), np.array([2, 3]), np.array([top, miss]), k=6
    )
    assert sums == {"ndcg@6": 1.0, "recall@6": 1.0, "count": 2.0}
    with pytest.raises(ValueError, match="outside"):
        rec.recommend([np.array([40])], 3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_exclude_seen_drops_the_whole_history_and_refills_to_k(backend):
    torch.manual_seed(1)
    model = _BagOfItems(30)
    model.exclude_seen = True  # the model's own setting is followed
    rec = InnerProductRecommender(model, backend=backend)
    histories = [np.array([3, 4, 5, 6, 7, 8]), np.array([1, 1, 2])]
    got, scores = rec.topk(histories, 8)
    weights = model.emb.weight.detach().numpy()
    for row, h in zip(got, histories, strict=True):
        ranked = brute_force(weights[h[-4:]].sum(0, keepdims=True), weights, 30)[0]
        expected = [i for i in ranked if i not in set(h.tolist())][:8]  # items 3 and 4 are excluded too
        np.testing.assert_array_equal(row, expected)
    assert np.isfinite(scores).all()
    assert InnerProductRecommender(model, backend=backend, exclude_seen=False).config()["exclude_seen"] is False
    # Fewer unseen items than k: the rest is padding.
    small = _BagOfItems(5)
    items, _ = InnerProductRecommender(small, exclude_seen=True, backend=backend).topk([np.array([0, 1, 2])], 4)
    assert sorted(items[0, :2].tolist()) == [3, 4] and (items[0, 2:] == -1).all()
