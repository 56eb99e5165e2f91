"""k-means: cluster recovery, repeatability, and the corner cases of the PyTorch implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.tokenize.kmeans import faiss_available, kmeans, nearest_centroid, resolve_kmeans_backend
from genrec.tokenize.rqkmeans import residual_kmeans
from tests.tokenize.helpers import hierarchical_clusters, same_partition

BACKENDS = ["torch", *(["faiss"] if faiss_available() else [])]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), k=st.integers(2, 12), dim=st.integers(2, 24))
def test_kmeans_recovers_separated_clusters(backend, seed, k, dim):
    x, labels, _ = hierarchical_clusters(k, 1, 30, dim, seed)
    centroids = kmeans(torch.from_numpy(x), k, seed=seed, backend=backend)
    assert centroids.shape == (k, dim) and centroids.dtype == torch.float32
    codes = nearest_centroid(torch.from_numpy(x), centroids).numpy()
    assert same_partition(labels, codes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_same_seed_same_centroids(backend):
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    first = kmeans(x, 16, seed=7, backend=backend)
    assert torch.equal(first, kmeans(x, 16, seed=7, backend=backend))
    assert not torch.equal(first, kmeans(x, 16, seed=8, backend=backend))


def test_torch_kmeans_matches_lloyd_fixed_point():
    """At convergence every centroid is the mean of the points nearest to it."""
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(3))
    centroids = kmeans(x, 10, iters=200, seed=0, backend="torch")
    assign = nearest_centroid(x, centroids)
    for c in range(10):
        members = x[assign == c]
        assert len(members) > 0
        torch.testing.assert_close(centroids[c], members.mean(0), rtol=1e-5, atol=1e-5)


def test_fewer_points_than_clusters_fills_every_centroid():
    x = torch.randn(3, 4)
    centroids = kmeans(x, 8, seed=0, backend="torch")
    assert centroids.shape == (8, 4) and torch.isfinite(centroids).all()
    torch.testing.assert_close(centroids[:3], x)


def test_duplicate_points_leave_no_empty_or_nan_cluster():
    x = torch.cat([torch.zeros(50, 3), torch.ones(50, 3)])  # two distinct points, ten clusters
    centroids = kmeans(x, 10, seed=0, backend="torch")
    assert torch.isfinite(centroids).all()
    assert set(nearest_centroid(x, centroids).tolist()) <= set(range(10))


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        kmeans(torch.randn(5), 2)
    with pytest.raises(ValueError, match="k >= 1"):
        kmeans(torch.randn(5, 2), 0)
    with pytest.raises(ValueError, match="kmeans backend"):
        resolve_kmeans_backend("sklearn")


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_kmeans_recovers_two_level_clusters(backend):
    x, coarse, fine = hierarchical_clusters(6, 6, 20, 16, seed=4)
    codebooks = residual_kmeans(torch.from_numpy(x), 2, 6, seed=0, backend=backend)
    assert codebooks.shape == (2, 6, 16)
    from genrec.ops import rq_encode

    codes = rq_encode(torch.from_numpy(x), codebooks).numpy()
    assert same_partition(coarse, codes[:, 0])
    assert same_partition(np.stack([coarse, fine], 1), codes)


@pytest.mark.parametrize("encode_backend", ["auto", "reference"])
def test_residual_kmeans_codes_are_rq_encodes(encode_backend):
    import genrec.ops
    from genrec.tokenize.rqkmeans import residual_kmeans_codes

    x = torch.from_numpy(np.random.default_rng(4).normal(size=(6000, 16)).astype(np.float32))
    books, codes = residual_kmeans_codes(x, 3, 32, iters=5, seed=2, encode_backend=encode_backend)
    torch.testing.assert_close(
        books, residual_kmeans(x, 3, 32, iters=5, seed=2, encode_backend=encode_backend)
    )
    assert torch.equal(codes, genrec.ops.rq_encode(x, books, backend=encode_backend))
