"""Settings of the item tokenizer, as plain dataclasses that map one to one onto TOML tables.

``[tokenize]`` holds :class:`TokenizeConfig`'s fields, ``[tokenize.rqvae]`` those of
:class:`RQVAEConfig` and ``[tokenize.rqkmeans]`` those of :class:`RQKMeansConfig`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from typing import Any

METHODS = ("rqvae", "rqkmeans")
GRADIENTS = ("rotation", "ste")


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
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda[:i]"."""
    kmeans_backend: str = "auto"
    """"auto" (faiss when installed, else PyTorch), "faiss" or "torch"; faiss and PyTorch give different IDs."""
    kmeans_iters: int = 50
    """Lloyd iterations of the codebook initialisation (rqvae)."""
    threads: int = 1
    """CPU threads for training and k-means. The network is small, so one thread is about as fast
    as several on an idle machine and much faster on a busy one; the IDs then also do not depend
    on the machine's core count. 0 keeps torch's default."""
    encode_backend: str = "auto"
    """Backend of ``genrec.ops.rq_encode`` for every nearest-codeword search."""
    progress: bool = field(default=True, metadata={"cache": False})
    """Show a progress bar (does not change the result, so stage caches ignore it)."""
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    rqkmeans: RQKMeansConfig = field(default_factory=RQKMeansConfig)

    def validate(self) -> TokenizeConfig:
        """Raise ValueError naming the field when a setting is out of range; returns self."""
        if self.method not in METHODS:
            raise ValueError(f"tokenize.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.disambiguation not in ("popularity", "index"):
            raise ValueError(
                f"tokenize.disambiguation must be popularity or index, got {self.disambiguation!r}"
            )
        if self.levels < 1:
            raise ValueError(f"tokenize.levels must be >= 1, got {self.levels}")
        if self.codebook_size < 2:
            raise ValueError(f"tokenize.codebook_size must be >= 2, got {self.codebook_size}")
        if self.threads < 0:
            raise ValueError(f"tokenize.threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.normalize not in ("l2", "standardize", "none"):
            raise ValueError(f"tokenize.normalize must be l2, standardize or none, got {self.normalize!r}")
        r = self.rqvae
        if r.gradient not in GRADIENTS:
            raise ValueError(
                f"tokenize.rqvae.gradient must be one of {', '.join(GRADIENTS)}, got {r.gradient!r}"
            )
        for name in ("epochs", "batch_size", "latent_dim", "kmeans_init_size", "restart_interval"):
            if getattr(r, name) < 1:
                raise ValueError(f"tokenize.rqvae.{name} must be >= 1, got {getattr(r, name)}")
        if not r.hidden_dims or any(h < 1 for h in r.hidden_dims):
            raise ValueError(f"tokenize.rqvae.hidden_dims must be positive widths, got {r.hidden_dims}")
        if not 0 <= r.dropout < 1:
            raise ValueError(f"tokenize.rqvae.dropout must be in [0, 1), got {r.dropout}")
        if not 0 <= r.warmup < 1:
            raise ValueError(f"tokenize.rqvae.warmup must be in [0, 1), got {r.warmup}")
        if r.learning_rate <= 0:
            raise ValueError(f"tokenize.rqvae.learning_rate must be > 0, got {r.learning_rate}")
        if self.rqkmeans.iters < 1 or self.kmeans_iters < 1:
            raise ValueError("tokenize.rqkmeans.iters and tokenize.kmeans_iters must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizeConfig:
        """Build from a ``[tokenize]`` table; unknown keys are an error naming the key."""
        return _from_dict(cls, data, "tokenize")

    def with_overrides(self, assignments: list[str]) -> TokenizeConfig:
        """A copy with ``key=value`` settings applied, e.g. ``rqvae.epochs=50`` or ``method="rqkmeans"``.

        Values are read as TOML (numbers, booleans, strings, lists); a bare word is taken as a string.
        """
        data = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"setting {assignment!r} must look like key=value, e.g. rqvae.epochs=50")
            *parents, leaf = key.strip().removeprefix("tokenize.").split(".")
            table = data
            for p in parents:
                if not isinstance(table.get(p), dict):
                    raise ValueError(f"setting {key!r}: tokenize has no table {p!r}")
                table = table[p]
            if leaf not in table:
                raise ValueError(
                    f"setting {key!r}: unknown field {leaf!r}; known: {', '.join(sorted(table))}"
                )
            table[leaf] = _parse_value(raw.strip())
        return TokenizeConfig.from_dict(data)


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"[{where}]: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        default = fields[name].default_factory() if callable(fields[name].default_factory) else None
        if dataclasses.is_dataclass(default):
            values[name] = _from_dict(type(default), value, f"{where}.{name}")
        else:
            values[name] = _check_type(value, fields[name], cls, where)
    return cls(**values)


def _check_type(value: Any, f: dataclasses.Field, cls: type, where: str) -> Any:
    """Coerce ints to floats where a float is expected; reject values of the wrong kind."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ValueError(
            f"[{where}] field {f.name!r} must be {type(default).__name__}, got {value!r} ({type(value).__name__})"
        )
    return value
