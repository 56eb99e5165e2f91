"""Item embeddings: every item of a prepared dataset as one vector, by a registered encoder.

``embed_items(dataset, EmbedConfig(...), out_dir)`` is the Python entry point and ``genrec embed``
its command. Encoders are looked up by name (:func:`get_encoder`); ``text`` is built in and
others join with :func:`register_encoder`. Importing this package loads no model library.
"""

from genrec.embed.artifacts import (
    EmbeddingError,
    check_embeddings,
    load_embeddings,
    read_meta,
    write_embeddings,
)
from genrec.embed.config import DEFAULT_TEMPLATE, EmbedConfig
from genrec.embed.embedding_cache import EmbeddingArtifact, default_cache_dir, embed_items
from genrec.embed.registry import ItemEncoder, encoder_names, get_encoder, register_encoder

__all__ = [
    "DEFAULT_TEMPLATE",
    "EmbedConfig",
    "EmbeddingArtifact",
    "EmbeddingError",
    "ItemEncoder",
    "check_embeddings",
    "default_cache_dir",
    "embed_items",
    "encoder_names",
    "get_encoder",
    "load_embeddings",
    "read_meta",
    "register_encoder",
    "write_embeddings",
]
