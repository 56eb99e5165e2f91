"""Settings of the item tokenizer, as plain dataclasses that map one to one onto TOML tables.

``[tokenize]`` holds :class:`TokenizeConfig`'s fields, ``[tokenize.rqvae]`` those of
:class:`RQVAEConfig` and ``[tokenize.rqkmeans]`` those of :class:`RQKMeansConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from genrec.settings import apply_assignments, build, require, runtime

METHODS = ("rqvae", "rqkmeans")
GRADIENTS = ("rotation", "ste")
DISAMBIGUATIONS = ("popularity", "index")
NORMALIZE = ("l2", "standardize", "none")


@dataclass
class RQVAEConfig:
    """The RQ-VAE network and its training recipe (defaults tuned on Amazon Beauty, see README)."""

    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    """Widths of the encoder's hidden layers (the decoder mirrors them)."""
    latent_dim: int = 32
    """Width of the quantized latent, the dimension of every codeword."""
    dropout: float = 0.0
    epochs: int = 50
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    """Fraction of the training steps over which the learning rate rises linearly from zero."""
    commitment_weight: float = 0.25
    """Weight of ||residual - sg(codeword)||^2 (TIGER: 0.25)."""
    gradient: str = "rotation"
    """How gradients cross the quantizer: "rotation" (the rotation trick) or "ste" (straight-through)."""
    kmeans_init_size: int = 16384
    """Items in the first batch, whose latents initialise the codebooks by k-means (all items if fewer)."""
    restart_dead_codes: bool = True
    """Move codewords that no item chose during the last ``restart_interval`` steps onto live residuals."""
    restart_interval: int = 50
    """Steps between dead-code checks; a code is dead when unused over the whole interval."""
    restart_until: float = 0.8
    """Stop restarting dead codes after this fraction of the epochs, so the codebooks can settle."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this value (0 turns clipping off)."""


@dataclass
class RQKMeansConfig:
    """Residual k-means: k-means on the embeddings, then on the residuals, level by level."""

    iters: int = 50
    """Lloyd iterations per level."""


@dataclass
class TokenizeConfig:
    """What ``genrec tokenize`` and :func:`genrec.tokenize.tokenize` do."""

    method: str = "rqvae"
    """"rqvae" (a trained autoencoder with residual quantization) or "rqkmeans" (no network)."""
    levels: int = 3
    """Code levels before the disambiguation token."""
    codebook_size: int = 256
    """Codes per level; also the largest allowed disambiguation level."""
    disambiguation: str = "popularity"
    """Order of the items that share all code levels, in the disambiguation token: "popularity"
    (most training interactions first, then item index) or "index" (item index)."""
    seed: int = 0
    normalize: str = "l2"
    """Input scaling: "l2" (unit-length rows), "standardize" (zero mean, unit variance per dimension) or "none"."""
    device: str = runtime("auto")
    """"auto" (CUDA when available), "cpu" or "cuda[:i]"."""
    kmeans_backend: str = "auto"
    """"auto" (faiss when installed, else PyTorch), "faiss" or "torch"; faiss and PyTorch give different IDs."""
    kmeans_iters: int = 50
    """Lloyd iterations of the codebook initialisation (rqvae)."""
    threads: int = 1
    """CPU threads for training and k-means. The network is small, so one thread is about as fast
    as several on an idle machine and much faster on a busy one; the IDs then also do not depend
    on the machine's core count. 0 keeps torch's default."""
    encode_backend: str = runtime("auto")
    """Backend of ``genrec.ops.rq_encode`` for every nearest-codeword search."""
    progress: bool = runtime(True)
    """Show a progress bar (does not change the result, so stage caches ignore it)."""
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    rqkmeans: RQKMeansConfig = field(default_factory=RQKMeansConfig)

    def validate(self) -> TokenizeConfig:
        """Raise ConfigError naming the field when a setting is out of range; returns self."""
        require(self.method in METHODS, "tokenize.method", self.method, f"one of {', '.join(METHODS)}")
        require(
            self.disambiguation in DISAMBIGUATIONS,
            "tokenize.disambiguation",
            self.disambiguation,
            f"one of {', '.join(DISAMBIGUATIONS)}",
        )
        require(self.levels >= 1, "tokenize.levels", self.levels, ">= 1")
        require(self.codebook_size >= 2, "tokenize.codebook_size", self.codebook_size, ">= 2")
        require(self.threads >= 0, "tokenize.threads", self.threads, ">= 0 (0 = torch's default)")
        require(self.normalize in NORMALIZE, "tokenize.normalize", self.normalize, f"one of {', '.join(NORMALIZE)}")
        require(self.kmeans_iters >= 1, "tokenize.kmeans_iters", self.kmeans_iters, ">= 1")
        r = self.rqvae
        require(r.gradient in GRADIENTS, "tokenize.rqvae.gradient", r.gradient, f"one of {', '.join(GRADIENTS)}")
        for name in ("epochs", "batch_size", "latent_dim", "kmeans_init_size", "restart_interval"):
            require(getattr(r, name) >= 1, f"tokenize.rqvae.{name}", getattr(r, name), ">= 1")
        ok = bool(r.hidden_dims) and all(h >= 1 for h in r.hidden_dims)
        require(ok, "tokenize.rqvae.hidden_dims", r.hidden_dims, "a list of positive widths")
        require(0 <= r.dropout < 1, "tokenize.rqvae.dropout", r.dropout, "in [0, 1)")
        require(0 <= r.warmup < 1, "tokenize.rqvae.warmup", r.warmup, "in [0, 1)")
        require(r.learning_rate > 0, "tokenize.rqvae.learning_rate", r.learning_rate, "> 0")
        require(self.rqkmeans.iters >= 1, "tokenize.rqkmeans.iters", self.rqkmeans.iters, ">= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "[tokenize]") -> TokenizeConfig:
        """Build from a ``[tokenize]`` table (genrec.settings: unknown keys and wrong types are errors)."""
        return build(cls, data, "tokenize.", where)

    def with_overrides(self, assignments: list[str]) -> TokenizeConfig:
        """A copy with ``--set`` assignments applied, e.g. ``rqvae.epochs=50`` or ``method="rqkmeans"``
        (``tokenize.`` in front is optional), read as genrec.settings reads every ``--set``."""
        table = apply_assignments({"tokenize": self.to_dict()}, assignments, prefix="tokenize")
        return build(TokenizeConfig, table["tokenize"], "tokenize.", "--set")
