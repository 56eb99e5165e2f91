"""GPU faiss (``pip install genrec[gpu]``): k-means and inner-product retrieval on CUDA tensors.

The `cuda` tests need a GPU and a faiss built with GPU support; elsewhere they skip, and the CPU
tests check that nothing changes without GPU faiss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec import retrieval as R
from genrec._faiss import faiss_gpu_available
from genrec.retrieval import InnerProductIndex
from genrec.tokenize import kmeans as K

needs_gpu_faiss = pytest.mark.skipif(
    not (torch.cuda.is_available() and faiss_gpu_available()), reason="needs a GPU and faiss with GPU support"
)


def blobs(n_per: int, centers: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated clusters: every correct k-means from a k-means++ start finds the same centroids."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g) * 20
    points = means.repeat_interleave(n_per, 0) + torch.randn(centers * n_per, dim, generator=g) * 0.5
    return points[torch.randperm(points.shape[0], generator=g)], means


def test_without_gpu_faiss_the_cpu_paths_are_unchanged():
    if faiss_gpu_available():
        pytest.skip("this machine has GPU faiss")
    index = InnerProductIndex(np.eye(4, dtype=np.float32), backend="auto")
    assert index.device is None and "device" not in index.describe()
    assert index.backend == ("faiss" if R.faiss_available() else "torch")


@pytest.mark.cuda
@needs_gpu_faiss
def test_kmeans_on_cuda_tensors_runs_gpu_faiss_and_finds_the_clusters():
    x, means = blobs(200, 8, 16, seed=0)
    got = K.kmeans(x.cuda(), 8, iters=20, seed=3, backend="faiss")
    assert got.device.type == "cuda" and got.shape == (8, 16)
    cpu = K.kmeans(x, 8, iters=20, seed=3, backend="faiss")
    # The same seeding and Lloyd iterations: the same centroids up to float rounding.
    assert torch.allclose(got.cpu(), cpu, atol=1e-3)
    nearest = torch.cdist(means, got.cpu()).min(1).values
    assert (nearest < 0.5).all()


@pytest.mark.cuda
@needs_gpu_faiss
def test_kmeans_uses_the_gpu_the_points_are_on(monkeypatch):
    used = []
    real = K.flat_l2_index
    monkeypatch.setattr(K, "flat_l2_index", lambda d, device: used.append(device) or real(d, device))
    x, _ = blobs(50, 4, 8, seed=1)
    device = torch.device(f"cuda:{torch.cuda.device_count() - 1}")
    got = K.kmeans(x.to(device), 4, iters=5, seed=0)  # "auto": faiss where installed
    assert used == [device] and got.device == device


@pytest.mark.cuda
@needs_gpu_faiss
@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_retrieval_on_cuda_items_searches_a_gpu_faiss_index(kind):
    g = np.random.default_rng(0)
    items = g.standard_normal((5000, 32)).astype(np.float32)
    queries = g.standard_normal((64, 32)).astype(np.float32)
    index = InnerProductIndex(torch.from_numpy(items).cuda(), kind=kind, nprobe=64 if kind == "ivf" else 0)
    assert index.backend == "faiss" and index.describe()["device"] == f"cuda:{torch.cuda.current_device()}"
    scores, ids = index.search(torch.from_numpy(queries).cuda(), 10)
    exact = np.argsort(-(queries.astype(np.float64) @ items.T.astype(np.float64)), axis=1, kind="stable")[:, :10]
    if kind == "exact":
        np.testing.assert_array_equal(ids, exact)
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, ids, axis=1), rtol=1e-4, atol=1e-4)
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)])
        assert recall > 0.9
    torch_index = InnerProductIndex(torch.from_numpy(items).cuda(), backend="torch")
    assert torch_index.device is None
    with pytest.raises(R.RetrievalError, match="GPU faiss searches at most k"):
        index.search(queries[:1], 5000)
