"""k-means at catalogue scale: the k-means++ seeding gives the same centroids as the cdist loop it
replaced (kept below as the reference), and beyond MAX_POINTS_PER_CENTROID points per centroid the
fit runs on a seeded sample (the seeding on a smaller one): repeatable, and about as good as the fit
on every point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genrec.tokenize.kmeans as km
from genrec.tokenize.kmeans import faiss_available, fit_sample, kmeans, nearest_centroid
from genrec.tokenize.rqkmeans import residual_kmeans
from tests.tokenize.helpers import hierarchical_clusters, same_partition

BACKENDS = ["torch", *(["faiss"] if faiss_available() else [])]


def reference_kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """genrec/tokenize/kmeans.py's seeding before: torch.cdist over every point, each step."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    centroids[0] = x[first]
    closest = (x - x[first]).pow(2).sum(1)
    for i in range(1, k):
        weights = closest.clamp_min(0).double()
        if float(weights.sum()) <= 0:
            picks = torch.randint(n, (trials,), generator=generator)
        else:
            picks = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidates = x[picks]
        dist = torch.cdist(candidates, x).pow(2)
        totals = torch.minimum(closest.unsqueeze(0), dist).sum(1)
        best = int(totals.argmin())
        centroids[i] = candidates[best]
        closest = torch.minimum(closest, dist[best])
    return centroids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n", "k", "dim"), [(30, 4, 3), (300, 16, 8), (2000, 64, 24), (5000, 256, 48)])
def test_seeding_equals_the_cdist_loop(seed, n, k, dim):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    if seed % 2:  # repeated points: zero distances and ties among the draws
        x = x[torch.randint(n // 3, (n,), generator=g)]
    got = km._kmeans_plus_plus(x, k, torch.Generator().manual_seed(seed + 10))
    want = reference_kmeans_plus_plus(x, k, torch.Generator().manual_seed(seed + 10))
    assert torch.equal(got, want)


@pytest.mark.parametrize("seed", range(3))
def test_within_the_caps_kmeans_gives_the_centroids_it_gave_before(seed):
    x = torch.randn(1000, 6, generator=torch.Generator().manual_seed(seed))  # 1000 <= 64 * 16
    g = torch.Generator().manual_seed(seed)
    before = km._kmeans_torch(
        x, reference_kmeans_plus_plus(x, 16, g), iters=50, generator=g, encode_backend="auto"
    )
    assert torch.equal(kmeans(x, 16, seed=seed, backend="torch"), before)


def test_inputs_within_the_cap_are_fitted_on_every_point():
    x = torch.randn(300, 4)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert fit_sample(x, 2, g) is x  # 300 <= 256 * 2
    assert torch.equal(g.get_state(), state)  # the generator did not move: same centroids as before


def test_the_sample_is_seeded_distinct_rows_in_order():
    x = torch.arange(5000, dtype=torch.float32)[:, None].repeat(1, 3)
    sample = fit_sample(x, 4, torch.Generator().manual_seed(1))  # 256 * 4 = 1024 of 5000
    rows = sample[:, 0].long()
    assert len(rows) == 1024 and (rows.diff() > 0).all()
    assert torch.equal(sample, fit_sample(x, 4, torch.Generator().manual_seed(1)))
    assert not torch.equal(sample, fit_sample(x, 4, torch.Generator().manual_seed(2)))


def _inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    return float((x - centroids[nearest_centroid(x, centroids)]).pow(2).sum())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("seed_points", [5, 40])
def test_a_sampled_fit_recovers_clusters_and_repeats(monkeypatch, backend, seed, seed_points):
    x, labels, _ = hierarchical_clusters(12, 1, 200, 16, seed)  # 2,400 points
    x = torch.from_numpy(x)
    full = kmeans(x, 12, seed=seed, backend=backend)
    monkeypatch.setattr(km, "MAX_POINTS_PER_CENTROID", 40)  # fit on 480 of the 2,400 points ...
    monkeypatch.setattr(km, "SEED_POINTS_PER_CENTROID", seed_points)  # ... seeded from 60 or 480
    sampled = kmeans(x, 12, seed=seed, backend=backend)
    assert torch.equal(sampled, kmeans(x, 12, seed=seed, backend=backend))
    assert not torch.equal(sampled, full)
    assert same_partition(labels, nearest_centroid(x, sampled).numpy())
    # Centroids from m points per cluster miss by ~1/m of the spread: ~2.5% more inertia at m = 40.
    assert _inertia(x, sampled) <= 1.06 * _inertia(x, full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sampled_fit_on_unclustered_data_costs_little(monkeypatch, backend):
    x = torch.randn(6000, 12, generator=torch.Generator().manual_seed(5))
    full = kmeans(x, 16, seed=0, backend=backend)
    monkeypatch.setattr(km, "MAX_POINTS_PER_CENTROID", 64)  # 1,024 of the 6,000 points ...
    monkeypatch.setattr(km, "SEED_POINTS_PER_CENTROID", 16)  # ... seeded from 256
    sampled = kmeans(x, 16, seed=0, backend=backend)
    assert _inertia(x, sampled) <= 1.05 * _inertia(x, full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_kmeans_on_samples_recovers_two_level_clusters(monkeypatch, backend):
    monkeypatch.setattr(km, "MAX_POINTS_PER_CENTROID", 12)  # 72 of the 720 points per level
    monkeypatch.setattr(km, "SEED_POINTS_PER_CENTROID", 6)
    x, coarse, fine = hierarchical_clusters(6, 6, 20, 16, seed=4)
    codebooks = residual_kmeans(torch.from_numpy(x), 2, 6, seed=0, backend=backend)
    from genrec.ops import rq_encode

    codes = rq_encode(torch.from_numpy(x), codebooks).numpy()
    assert same_partition(np.stack([coarse, fine], 1), codes)
