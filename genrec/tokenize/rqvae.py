"""RQ-VAE (TIGER): an MLP autoencoder whose latent is residual-quantized into L codes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from genrec.tokenize.config import RQVAEConfig
from genrec.tokenize.quantizer import ResidualQuantizer


def mlp(widths: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given widths with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@dataclass
class RQVAEOutput:
    reconstruction: torch.Tensor
    codes: torch.Tensor
    reconstruction_loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    loss: torch.Tensor
    residuals: torch.Tensor = field(repr=False)


class RQVAE(nn.Module):
    """input_dim -> hidden_dims -> latent_dim, quantized by ``levels`` codebooks, and back.

    >>> model = RQVAE(384, levels=3, codebook_size=256)
    >>> model.encode(torch.randn(5, 384)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        levels: int = 3,
        codebook_size: int = 256,
        hidden_dims: Sequence[int] = (512, 256, 128),
        latent_dim: int = 32,
        dropout: float = 0.0,
        commitment_weight: float = 0.25,
        gradient: str = "rotation",
        encode_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.commitment_weight = commitment_weight
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim], dropout)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim], dropout)
        self.quantizer = ResidualQuantizer(
            levels,
            codebook_size,
            latent_dim,
            gradient=gradient,
            encode_backend=encode_backend,
        )

    @classmethod
    def from_config(
        cls, input_dim: int, config: RQVAEConfig, *, levels: int, codebook_size: int, encode_backend: str
    ) -> RQVAE:
        return cls(
            input_dim,
            levels=levels,
            codebook_size=codebook_size,
            hidden_dims=config.hidden_dims,
            latent_dim=config.latent_dim,
            dropout=config.dropout,
            commitment_weight=config.commitment_weight,
            gradient=config.gradient,
            encode_backend=encode_backend,
        )

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        z = self.encoder(x)  # (B, latent)
        q = self.quantizer(z)
        reconstruction = self.decoder(q.quantized)  # (B, input_dim)
        reconstruction_loss = (reconstruction - x).pow(2).sum(-1).mean()
        loss = reconstruction_loss + q.codebook_loss + self.commitment_weight * q.commitment_loss
        return RQVAEOutput(
            reconstruction,
            q.codes,
            reconstruction_loss,
            q.codebook_loss,
            q.commitment_loss,
            loss,
            q.residuals,
        )

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """int64 codes [N, L] of inputs ``x`` [N, input_dim] (in eval mode, batched)."""
        was_training = self.training
        self.eval()
        try:
            parts = [
                self.quantizer.encode(self.encoder(x[i : i + batch_size]))
                for i in range(0, len(x), batch_size)
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.empty(0, self.quantizer.levels, dtype=torch.long)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[N, input_dim]: the decoder's reconstruction from codes [N, L]."""
        return self.decoder(self.quantizer.lookup(codes))
