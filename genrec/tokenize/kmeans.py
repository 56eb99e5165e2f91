"""Seeded k-means: faiss where it is installed (on the points' GPU with GPU faiss), a PyTorch
implementation everywhere else.

The GPU machine has no faiss, so the PyTorch path is a full implementation (k-means++ seeding,
Lloyd iterations, re-seeding of empty clusters), not a stand-in. Nearest-centroid search goes
through ``genrec.ops.rq_encode`` with a single level.

Both fit on at most ``MAX_POINTS_PER_CENTROID`` points per centroid (faiss's own default): beyond
that, a seeded sample, so a million items cost what 65,536 do for 256 centroids (the caller then
assigns every point to the fitted centroids, a single linear pass).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch
import torch.nn.functional as F

import genrec.ops
from genrec._faiss import faiss_gpu_available, flat_l2_index

KMEANS_BACKENDS = ("auto", "faiss", "torch")
MAX_POINTS_PER_CENTROID = 256
"""k-means fits on at most this many points per centroid; beyond, on a seeded sample of them."""
SEED_POINTS_PER_CENTROID = 64
"""k-means++ seeding (k sequential passes) draws from at most this many points per centroid."""


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def resolve_kmeans_backend(backend: str) -> str:
    """ "faiss" or "torch": what ``backend`` ("auto", "faiss", "torch") means on this machine."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"kmeans backend must be one of {', '.join(KMEANS_BACKENDS)}, got {backend!r}")
    if backend == "faiss" and not faiss_available():
        raise RuntimeError(
            "kmeans backend 'faiss' asked for, but faiss is not installed (pip install faiss-cpu)"
        )
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    return backend


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """int64 [N]: index of the nearest row of ``centroids`` [K, D] for each row of ``x`` [N, D]."""
    return genrec.ops.rq_encode(x, centroids.unsqueeze(0), backend=backend, validate=False)[:, 0]


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 50,
    seed: int = 0,
    backend: str = "auto",
    encode_backend: str = "auto",
) -> torch.Tensor:
    """Centroids [k, D] of ``x`` [N, D] (float32, on ``x``'s device), repeatable for a given seed.

    With fewer distinct points than ``k``, the points themselves fill the first centroids and the
    rest are copies of them with small seeded noise (the caller's dead-code restarts fix those).
    With more than ``MAX_POINTS_PER_CENTROID * k`` points, the centroids are fitted to a seeded
    sample of that many, seeded by k-means++ on at most ``SEED_POINTS_PER_CENTROID * k`` of them.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] tensor, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"kmeans needs k >= 1, got {k}")
    x = x.detach().float().contiguous()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if x.shape[0] <= k:
        return _pad_with_jitter(x, k, generator)
    x = fit_sample(x, k, generator)
    # Both backends start from the same k-means++ seeding (faiss's own is uniformly random, which
    # more often leaves two centroids in one cluster).
    init = _kmeans_plus_plus(fit_sample(x, k, generator, SEED_POINTS_PER_CENTROID), k, generator)
    if resolve_kmeans_backend(backend) == "faiss":
        return _kmeans_faiss(x, init, iters=iters, seed=seed)
    return _kmeans_torch(x, init, iters=iters, generator=generator, encode_backend=encode_backend)


def fit_sample(
    x: torch.Tensor, k: int, generator: torch.Generator, per_centroid: int | None = None
) -> torch.Tensor:
    """``x`` itself up to ``per_centroid * k`` rows (default ``MAX_POINTS_PER_CENTROID``); beyond,
    that many rows drawn by ``generator`` (kept in their order). Smaller inputs leave the
    generator untouched."""
    limit = (MAX_POINTS_PER_CENTROID if per_centroid is None else per_centroid) * k
    if x.shape[0] <= limit:
        return x
    rows = torch.randperm(x.shape[0], generator=generator)[:limit].sort().values
    return x[rows.to(x.device)]


def _pad_with_jitter(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    picks = torch.randint(x.shape[0], (k - x.shape[0],), generator=generator).to(x.device)
    scale = x.std().clamp_min(1e-6) * 1e-2
    noise = torch.randn(k - x.shape[0], x.shape[1], generator=generator).to(x.device) * scale
    return torch.cat([x, x[picks] + noise])


def _kmeans_faiss(x: torch.Tensor, init: torch.Tensor, *, iters: int, seed: int) -> torch.Tensor:
    import faiss

    data = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    k = init.shape[0]
    if x.device.type == "cuda" and faiss_gpu_available():
        return _kmeans_faiss_gpu(data, init, x.device, iters=iters, seed=seed)
    # Use every point (faiss subsamples 256 per centroid by default) and accept small inputs quietly.
    km = faiss.Kmeans(
        data.shape[1],
        k,
        niter=iters,
        seed=seed,
        verbose=False,
        max_points_per_centroid=data.shape[0],
        min_points_per_centroid=1,
    )
    km.train(data, init_centroids=np.ascontiguousarray(init.cpu().numpy(), dtype=np.float32))
    return torch.from_numpy(np.array(km.centroids, dtype=np.float32)).to(x.device)


def _kmeans_faiss_gpu(
    data: np.ndarray, init: torch.Tensor, device: torch.device, *, iters: int, seed: int
) -> torch.Tensor:
    """The faiss path with the points assigned by an exact index on ``device``'s GPU (GPU faiss)."""
    import faiss

    k, d = init.shape
    clustering = faiss.Clustering(d, k)
    clustering.niter, clustering.seed, clustering.verbose = iters, seed, False
    clustering.max_points_per_centroid, clustering.min_points_per_centroid = data.shape[0], 1
    faiss.copy_array_to_vector(
        np.ascontiguousarray(init.cpu().numpy(), dtype=np.float32).ravel(), clustering.centroids
    )
    clustering.train(data, flat_l2_index(d, device))
    return torch.from_numpy(faiss.vector_to_array(clustering.centroids).reshape(k, d).copy()).to(device)


def _kmeans_torch(
    x: torch.Tensor, init: torch.Tensor, *, iters: int, generator: torch.Generator, encode_backend: str
) -> torch.Tensor:
    centroids, k = init, init.shape[0]
    for _ in range(iters):
        assign = nearest_centroid(x, centroids, encode_backend)
        counts = torch.bincount(assign, minlength=k)
        sums = _cluster_sums(x, assign, k)
        updated = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = counts == 0
        if empty.any():
            updated[empty] = _reseed_empty(x, updated, assign, int(empty.sum()), generator)
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids


def _cluster_sums(x: torch.Tensor, assign: torch.Tensor, k: int) -> torch.Tensor:
    """[k, D]: the sum of the points of each cluster, in a fixed order on every device."""
    if x.device.type == "cpu":
        return torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, assign, x)
    # index_add_ on CUDA adds in a random order; a one-hot matmul is repeatable.
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], 1 << 15):
        chunk = assign[start : start + (1 << 15)]
        sums += F.one_hot(chunk, k).to(x.dtype).T @ x[start : start + (1 << 15)]
    return sums


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding: each step draws a few candidates with probability proportional to
    their squared distance from the chosen centroids and keeps the one that lowers the total most.
    Plain k-means++ (one draw) more often seeds two centroids in one cluster."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    centroids[0] = x[first]
    closest = (x - x[first]).pow(2).sum(1)
    # Squared distances from candidates to every point by one matrix product with the points'
    # padded rows [x, 1, |x|^2], built once: torch.cdist's matrix-product route (the one it takes
    # beyond 25 points) with the same arithmetic, so the same numbers, without rebuilding the
    # padded points on every call (most of its time).
    ones = torch.ones(n, 1, dtype=x.dtype, device=x.device)
    padded = torch.cat([x, ones, x.pow(2).sum(-1, keepdim=True)], dim=1)
    for i in range(1, k):
        weights = closest.clamp_min(0).cpu().double()
        if float(weights.sum()) <= 0:  # every point already coincides with a centroid
            picks = torch.randint(n, (trials,), generator=generator)
        else:
            picks = torch.multinomial(weights, trials, replacement=True, generator=generator)
        candidates = x[picks.to(x.device)]  # (trials, D)
        dist = _squared_distances(candidates, padded)  # (trials, N)
        totals = torch.minimum(closest.unsqueeze(0), dist).sum(1)
        best = int(totals.argmin())
        centroids[i] = candidates[best]
        closest = torch.minimum(closest, dist[best])
    return centroids


def _squared_distances(c: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """[len(c), N]: ``torch.cdist(c, x).pow(2)`` for ``padded`` = [x, 1, |x|^2] (see above)."""
    c_padded = torch.cat([c.mul(-2), c.pow(2).sum(-1, keepdim=True), torch.ones_like(c[:, :1])], dim=1)
    return (c_padded @ padded.mT).clamp_min_(0).sqrt_().pow(2)


def _reseed_empty(
    x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """New positions for empty clusters: the points farthest from their centroid, seeded tie-breaks."""
    error = (x - centroids[assign]).pow(2).sum(1).cpu()
    # A tiny seeded jitter breaks ties among equal errors reproducibly.
    error = error + torch.rand(error.shape, generator=generator, dtype=error.dtype) * 1e-12
    far = torch.topk(error, min(count, x.shape[0])).indices.to(x.device)
    picks = x[far]
    if picks.shape[0] < count:
        picks = torch.cat(
            [picks, picks[torch.arange(count - picks.shape[0], device=x.device) % picks.shape[0]]]
        )
    return picks
