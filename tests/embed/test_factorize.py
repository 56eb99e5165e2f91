"""The float32 randomized truncated SVD against numpy's dense SVD on small random sparse matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from genrec.embed.factorize import truncated_svd


def clustered_sparse(seed: int, m: int, n: int, clusters: int, density: float = 0.6) -> sp.csr_matrix:
    """Co-occurrence-like: a dense-ish block of rows x columns per cluster (each nearly rank one,
    so the leading ``clusters`` singular values stand clear of the rest), weak sparse noise elsewhere."""
    rng = np.random.default_rng(seed)
    row_of, col_of = np.arange(m) % clusters, rng.permutation(np.arange(n) % clusters)
    strength = 2.0 + rng.random(clusters)  # distinct cluster strengths: distinct singular values
    same = row_of[:, None] == col_of[None, :]
    mask = rng.random((m, n)) < np.where(same, density, 0.01)
    values = np.where(same, strength[row_of][:, None], 0.3 * rng.random((m, n)))
    return sp.csr_matrix(np.where(mask, values, 0.0))


def principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the column spaces of orthonormal a and b."""
    return np.linalg.svd(a.T @ b, compute_uv=False)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(300, 200), (150, 400)])
def test_singular_values_and_subspaces_match_a_dense_svd(seed, shape):
    clusters = 6
    matrix = clustered_sparse(seed, *shape, clusters)
    u, s, v = truncated_svd(matrix, clusters, seed=seed)
    assert u.dtype == s.dtype == v.dtype == torch.float32
    assert u.shape == (shape[0], clusters) and v.shape == (shape[1], clusters)
    ref_u, ref_s, ref_vt = np.linalg.svd(matrix.toarray())
    np.testing.assert_allclose(s.numpy(), ref_s[:clusters], rtol=1e-4)
    assert principal_cosines(u.numpy(), ref_u[:, :clusters]).min() > 0.999
    assert principal_cosines(v.numpy(), ref_vt[:clusters].T).min() > 0.999
    # The factors themselves (not only their spans): orthonormal, and U S V^T is the best rank-r fit.
    np.testing.assert_allclose(u.numpy().T @ u.numpy(), np.eye(clusters), atol=1e-5)
    best = (ref_u[:, :clusters] * ref_s[:clusters]) @ ref_vt[:clusters]
    approx = (u * s).numpy() @ v.numpy().T
    assert np.abs(approx - best).max() < 1e-3 * ref_s[0]


def float64_reference(a: np.ndarray, rank: int, seed: int, oversample: int = 16, power_iters: int = 4):
    """The float64 randomized SVD this module computed before (dense here), on the same test matrix."""
    a = torch.from_numpy(a)
    k = min(rank + oversample, *a.shape)
    omega = torch.randn(a.shape[1], k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(a @ omega)
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(a.t() @ q)
        q, _ = torch.linalg.qr(a @ q)
    u_small, s, vh = torch.linalg.svd((a.t() @ q).t(), full_matrices=False)
    u = q @ u_small[:, :rank]
    flip = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True)))
    return (u * flip).numpy(), s[:rank].numpy(), (vh[:rank].t() * flip).numpy()


@pytest.mark.parametrize("seed", range(3))
def test_float32_matches_the_float64_computation_on_a_flat_spectrum(seed):
    """Without a spectral gap the randomized result is an approximation; float32 must not change it."""
    matrix = sp.random(300, 200, density=0.05, random_state=seed, format="csr")
    u, s, v = truncated_svd(matrix, 10, seed=seed)
    ref_u, ref_s, ref_v = float64_reference(matrix.toarray(), 10, seed)
    np.testing.assert_allclose(s.numpy(), ref_s, rtol=1e-5)
    np.testing.assert_allclose(u.numpy(), ref_u, atol=2e-4)
    np.testing.assert_allclose(v.numpy(), ref_v, atol=2e-4)


def test_every_input_form_gives_the_same_factors():
    matrix = clustered_sparse(7, 120, 90, 4)
    coo = matrix.tocoo()
    forms = {
        "scipy": matrix,
        "torch coo": torch.sparse_coo_tensor(
            np.stack([coo.row, coo.col]), coo.data, coo.shape, check_invariants=True
        ),
        "torch csr": torch.from_numpy(matrix.toarray()).to_sparse_csr(),
        "dense": torch.from_numpy(matrix.toarray()),
    }
    results = {name: truncated_svd(m, 4, seed=3) for name, m in forms.items()}
    base = results["scipy"]
    for name, (u, s, v) in results.items():
        np.testing.assert_allclose(s.numpy(), base[1].numpy(), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(u.numpy(), base[0].numpy(), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(v.numpy(), base[2].numpy(), atol=1e-4, err_msg=name)


def test_same_seed_same_factors_and_the_sign_rule():
    matrix = clustered_sparse(1, 200, 100, 5)
    a, b = truncated_svd(matrix, 5, seed=11), truncated_svd(matrix, 5, seed=11)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    u = a[0]
    largest = u.gather(0, u.abs().argmax(dim=0, keepdim=True))
    assert (largest > 0).all()


def test_a_matrix_of_lower_rank_than_asked():
    rng = np.random.default_rng(0)
    low = sp.csr_matrix(rng.random((60, 2)) @ rng.random((2, 40)))  # rank 2
    u, s, v = truncated_svd(low, 5, seed=0)
    ref = np.linalg.svd(low.toarray(), compute_uv=False)
    np.testing.assert_allclose(s.numpy()[:2], ref[:2], rtol=1e-5)
    assert (s.numpy()[2:] < 1e-4 * ref[0]).all()
    approx = (u * s).numpy() @ v.numpy().T
    np.testing.assert_allclose(approx, low.toarray(), atol=1e-4)


def test_small_matrices_and_bad_ranks():
    tiny = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    u, s, v = truncated_svd(tiny, 10)
    assert s.tolist() == pytest.approx([2.0, 1.0])
    assert u.shape == (3, 2) and v.shape == (2, 2)
    with pytest.raises(ValueError, match="rank 0"):
        truncated_svd(tiny, 0)
