"""Residual vector quantization with learnable codebooks, for the RQ-VAE.

Codes come from ``genrec.ops.rq_encode`` on detached tensors (the nearest-codeword search is
not differentiable anyway); the chosen codewords are then gathered in PyTorch so that the
codebook and commitment losses, and the gradient that crosses the quantizer, are ordinary autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genrec.ops
from genrec.tokenize.rqkmeans import residual_kmeans


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor
    """[B, D]: the sum of the chosen codewords in the forward pass; carries gradient to the input."""
    codes: torch.Tensor
    """int64 [B, L]."""
    codebook_loss: torch.Tensor
    """sum over levels of ||sg(residual) - codeword||^2, mean over the batch: trains the codebooks."""
    commitment_loss: torch.Tensor
    """sum over levels of ||residual - sg(codeword)||^2, mean over the batch: pulls the encoder to the codes."""
    residuals: torch.Tensor
    """[L, B, D] detached: the input of each level (for dead-code restarts)."""


def rotate_onto(e: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The rotation trick (Fifty et al., 2024): returns ``q`` in the forward pass, while the gradient
    reaches ``e`` through the rotation and rescaling that maps ``e`` onto ``q`` (held constant).

    So the angle between the output's gradient and ``e`` is preserved, unlike straight-through.
    """
    e_norm = e.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    e_hat = (e / e_norm).detach()
    q_hat = (q / q_norm).detach()
    r = F.normalize(e_hat + q_hat, dim=-1, eps=eps).detach()
    # Householder-style rotation R = I - 2 r r^T + 2 q_hat e_hat^T, applied without forming R.
    rotated = e - 2 * r * (r * e).sum(-1, keepdim=True) + 2 * q_hat * (e_hat * e).sum(-1, keepdim=True)
    return (q_norm / e_norm).detach() * rotated


class ResidualQuantizer(nn.Module):
    """``levels`` codebooks of ``codebook_size`` codewords of width ``dim``, applied to residuals."""

    def __init__(
        self,
        levels: int,
        codebook_size: int,
        dim: int,
        *,
        gradient: str = "rotation",
        encode_backend: str = "auto",
    ) -> None:
        super().__init__()
        if gradient not in ("rotation", "ste"):
            raise ValueError(f"gradient must be 'rotation' or 'ste', got {gradient!r}")
        self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
        self.gradient = gradient
        self.encode_backend = encode_backend
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, dim) * 0.01)
        self.register_buffer("initialized", torch.tensor(False))
        # Codes chosen since the last dead-code check, per level (not saved with the weights).
        self.register_buffer("usage", torch.zeros(levels, codebook_size, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, *, iters: int, seed: int, backend: str = "auto") -> None:
        """Set each level's codebook to the k-means centroids of that level's residuals of ``z``."""
        codebooks = residual_kmeans(
            z,
            self.levels,
            self.codebook_size,
            iters=iters,
            seed=seed,
            backend=backend,
            encode_backend=self.encode_backend,
        )
        self.codebooks.copy_(codebooks.to(self.codebooks))
        self.initialized.fill_(True)

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """int64 codes [B, L] of latents ``z`` [B, D]."""
        return genrec.ops.rq_encode(
            z.detach().float().contiguous(),
            self.codebooks.detach().float().contiguous(),
            backend=self.encode_backend,
        )

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, D]: the sum over levels of the codewords named by ``codes`` [B, L]."""
        return sum(F.embedding(codes[:, level], self.codebooks[level]) for level in range(self.levels))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        codes = self.encode(z)
        residual = z
        residuals, codewords = [], []
        codebook_loss = z.new_zeros(())
        commitment_loss = z.new_zeros(())
        for level in range(self.levels):
            # F.embedding's backward is deterministic on CUDA, unlike indexing with accumulate.
            codeword = F.embedding(codes[:, level], self.codebooks[level])  # (B, D)
            codebook_loss = codebook_loss + (residual.detach() - codeword).pow(2).sum(-1).mean()
            commitment_loss = commitment_loss + (residual - codeword.detach()).pow(2).sum(-1).mean()
            residuals.append(residual.detach())
            codewords.append(codeword.detach())
            residual = residual - codeword.detach()
        total = torch.stack(codewords).sum(0)
        quantized = rotate_onto(z, total) if self.gradient == "rotation" else z + (total - z).detach()
        residuals = torch.stack(residuals)
        if self.training:
            self._count_usage(codes)
        return QuantizerOutput(quantized, codes, codebook_loss, commitment_loss, residuals)

    @torch.no_grad()
    def _count_usage(self, codes: torch.Tensor) -> None:
        for level in range(self.levels):
            self.usage[level] += torch.bincount(codes[:, level], minlength=self.codebook_size)

    @torch.no_grad()
    def restart_dead_codes(self, residuals: torch.Tensor, generator: torch.Generator) -> int:
        """Move every codeword unused since the last call onto a random residual of its level.

        ``residuals`` [L, B, D] come from the current batch. Returns how many codes moved; the usage
        counts start again from zero.
        """
        moved = 0
        batch = residuals.shape[1]
        for level in range(self.levels):
            dead = torch.nonzero(self.usage[level] == 0).flatten()
            if len(dead) == 0:
                continue
            picks = torch.randperm(batch, generator=generator)[: len(dead)]
            if len(picks) < len(dead):  # more dead codes than residuals in the batch
                picks = picks[torch.arange(len(dead)) % len(picks)]
            targets = residuals[level, picks.to(residuals.device)]
            jitter = torch.randn(targets.shape, generator=generator).to(targets.device)
            scale = residuals[level].std().clamp_min(1e-6) * 1e-3
            dead = dead.to(self.codebooks.device)
            self.codebooks[level, dead] = (targets + jitter * scale).to(self.codebooks.dtype)
            moved += len(dead)
        self.usage.zero_()
        return moved
