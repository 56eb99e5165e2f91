"""The residual quantizer: codes from genrec.ops.rq_encode, gradients, losses, dead-code restarts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.ops.reference import rq_encode_reference
from genrec.tokenize.quantizer import ResidualQuantizer, rotate_onto


def explicit_rotation(e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The matrix lambda * R with R e_hat = q_hat, built in full (float64), for one pair."""
    e_hat, q_hat = e / e.norm(), q / q.norm()
    r = (e_hat + q_hat) / (e_hat + q_hat).norm()
    eye = torch.eye(len(e), dtype=e.dtype)
    rotation = eye - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)
    return (q.norm() / e.norm()) * rotation


@settings(max_examples=40)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(2, 16))
def test_rotation_trick_forward_is_q_and_gradient_is_the_rotation(seed, dim):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(dim, generator=g, dtype=torch.float64, requires_grad=True)
    q = torch.randn(dim, generator=g, dtype=torch.float64)
    out = rotate_onto(e.unsqueeze(0), q.unsqueeze(0))[0]
    torch.testing.assert_close(out, q)
    upstream = torch.randn(dim, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, e, upstream)
    matrix = explicit_rotation(e.detach(), q)
    torch.testing.assert_close(grad, matrix.T @ upstream)
    # A rotation times a scale: the gradient's norm scales by |q| / |e|, its direction turns rigidly.
    assert torch.allclose(grad.norm(), upstream.norm() * q.norm() / e.detach().norm())


def make_quantizer(gradient: str, seed: int = 0) -> tuple[ResidualQuantizer, torch.Tensor]:
    torch.manual_seed(seed)
    quantizer = ResidualQuantizer(3, 16, 8, gradient=gradient)
    z = torch.randn(64, 8)
    quantizer.init_kmeans(z, iters=10, seed=seed, backend="torch")
    return quantizer, z


@pytest.mark.parametrize("gradient", ["rotation", "ste"])
def test_forward_codes_losses_and_gradients(gradient):
    quantizer, z = make_quantizer(gradient)
    z = z.clone().requires_grad_(True)
    out = quantizer(z)
    torch.testing.assert_close(out.codes, rq_encode_reference(z.detach(), quantizer.codebooks.detach()))
    picked = [quantizer.codebooks[level, out.codes[:, level]].detach() for level in range(3)]
    torch.testing.assert_close(out.quantized, sum(picked), rtol=1e-5, atol=1e-5)
    residual, expected = z.detach(), torch.zeros(())
    for level in range(3):
        expected = expected + (residual - picked[level]).pow(2).sum(-1).mean()
        residual = residual - picked[level]
    torch.testing.assert_close(out.codebook_loss, expected)
    torch.testing.assert_close(out.commitment_loss, expected)
    # The codebook loss moves only the chosen codewords; the commitment loss only the input.
    (cb_grad,) = torch.autograd.grad(out.codebook_loss, quantizer.codebooks, retain_graph=True)
    chosen = torch.zeros(3, 16, dtype=torch.bool)
    for level in range(3):
        chosen[level, out.codes[:, level]] = True
    assert (cb_grad.abs().sum(-1)[~chosen] == 0).all()
    (z_grad,) = torch.autograd.grad(out.commitment_loss, z, retain_graph=True)
    assert z_grad.abs().sum() > 0
    upstream = torch.randn_like(z)
    (through,) = torch.autograd.grad(out.quantized, z, upstream)
    if gradient == "ste":
        torch.testing.assert_close(through, upstream)
    else:
        assert not torch.allclose(through, upstream)


def test_usage_counts_and_dead_code_restart():
    quantizer, z = make_quantizer("rotation")
    with torch.no_grad():
        quantizer.codebooks[:, 5] = 1e6  # nobody is near these: dead codes
    quantizer.train()
    out = quantizer(z)
    assert quantizer.usage.sum(1).tolist() == [64, 64, 64]
    assert (quantizer.usage[:, 5] == 0).all()
    dead_before = (quantizer.usage == 0).sum().item()
    moved = quantizer.restart_dead_codes(out.residuals, torch.Generator().manual_seed(0))
    assert moved == dead_before and moved >= 3
    assert (quantizer.usage == 0).all()  # counting starts again
    assert quantizer.codebooks.abs().max() < 1e3
    # Each restarted codeword sits on one of its level's residuals (plus a tiny jitter).
    for level in range(3):
        gap = torch.cdist(quantizer.codebooks[level, 5:6].detach(), out.residuals[level]).min()
        assert gap < 1e-2


def test_lookup_sums_codewords():
    quantizer, _ = make_quantizer("ste")
    codes = torch.tensor([[1, 2, 3], [0, 0, 15]])
    expected = (
        quantizer.codebooks[0, codes[:, 0]]
        + quantizer.codebooks[1, codes[:, 1]]
        + quantizer.codebooks[2, codes[:, 2]]
    )
    torch.testing.assert_close(quantizer.lookup(codes), expected)
