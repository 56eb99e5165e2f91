"""``embed_items``: the part of ``genrec embed`` every encoder shares, and the embedding cache.

Pick the encoder, key the result by its fingerprint (model + inputs + options), reuse the output
folder or the cache when the key matches, else encode, check and write the artifact.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import genrec
from genrec.data import load_prepared
from genrec.embed.artifacts import (
    EMBEDDINGS_FILE,
    META_FILE,
    EmbeddingError,
    check_embeddings,
    item_ids_sha256,
    load_embeddings,
    read_meta,
    write_embeddings,
)
from genrec.embed.config import EmbedConfig
from genrec.embed.registry import get_encoder
from genrec.embed.state import encoder_new_item_state, reuse_state, write_encoder_state

if TYPE_CHECKING:
    from genrec.data import PreparedDataset

CACHE_DIR_ENV = "GENREC_CACHE_DIR"


@dataclass
class EmbeddingArtifact:
    """Embeddings of a dataset's items, where they were written, and how they were made."""

    path: Path
    """The EMB folder (embeddings.npy + embed.json)."""
    embeddings: np.ndarray
    """float32 [num_items, D], row i is item index i."""
    meta: dict
    """The content of embed.json."""
    reused: str | None
    """None when computed now, "output" or "cache" when an earlier result was reused."""


def default_cache_dir() -> Path:
    """``$GENREC_CACHE_DIR/embeddings``, else ``$XDG_CACHE_HOME/genrec/embeddings`` (``~/.cache/...``)."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        return Path(root).expanduser() / "embeddings"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "genrec" / "embeddings"


def _dataset_item_ids_hash(dataset: PreparedDataset) -> str:
    return item_ids_sha256(dataset.item_table(columns=["item_id"]).column("item_id").to_pylist())


def _reusable(folder: Path, key: str, num_items: int) -> tuple[np.ndarray, dict] | None:
    """The embeddings in ``folder`` when they were made with cache key ``key`` and are intact."""
    try:
        meta = read_meta(folder)
        if meta.get("cache_key") != key or not (folder / EMBEDDINGS_FILE).is_file():
            return None
        return load_embeddings(folder, num_items=num_items)
    except EmbeddingError:
        return None  # a damaged earlier result is recomputed, not trusted


def embed_items(
    dataset: PreparedDataset | str | Path,
    config: EmbedConfig | None = None,
    out_dir: str | Path | None = None,
) -> EmbeddingArtifact:
    """Embed every item of a prepared dataset with ``config.encoder`` and write ``out_dir``
    (embeddings.npy, embed.json); without ``out_dir`` the result lives in the cache folder only.

    Equal model, inputs and options give the same cache key: the result is then copied from
    ``out_dir`` itself or from the cache instead of being computed again.
    """

    config = (config or EmbedConfig()).validate()
    data = dataset if not isinstance(dataset, (str, Path)) else load_prepared(dataset)
    encoder = get_encoder(config.encoder)(config)
    key = hashlib.sha256(f"{config.encoder}\0{encoder.fingerprint(data)}".encode()).hexdigest()
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    cached_folder = cache_dir / key[:32]
    out = Path(out_dir) if out_dir is not None else cached_folder

    dataset_fields = {
        "dataset": str(data.path),
        "dataset_manifest_sha256": data.fingerprint,
        "item_ids_sha256": _dataset_item_ids_hash(data),
    }
    found = _reusable(out, key, data.num_items) if config.cache else None
    # Reused embeddings come with the encoder state that embeds new items later (genrec.embed.state).
    if found is not None and reuse_state(encoder, out, out, found[0]):
        embeddings, meta = found
        if any(meta.get(k) != v for k, v in dataset_fields.items()):  # same texts, another dataset
            write_embeddings(out, embeddings, {**meta, **dataset_fields})
        return EmbeddingArtifact(out, embeddings, read_meta(out), "output")

    found = _reusable(cached_folder, key, data.num_items) if config.cache else None
    if found is not None and reuse_state(encoder, cached_folder, out, found[0]):
        embeddings, meta = found
        reused = "cache"
        meta = {**meta, **dataset_fields, "reused_from": str(cached_folder)}
    else:
        reused = None
        started = time.perf_counter()
        embeddings = encoder.encode(data)
        embeddings = check_embeddings(
            embeddings, num_items=data.num_items, source=f"encoder {config.encoder!r} output"
        )
        meta = {
            "encoder": config.encoder,
            **encoder.describe(),
            **dataset_fields,
            "cache_key": key,
            "seconds": time.perf_counter() - started,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "genrec_version": genrec.__version__,
        }
        state = encoder_new_item_state(encoder)
        if config.cache and out != cached_folder:
            try:
                write_encoder_state(cached_folder, state, embeddings)
                write_embeddings(cached_folder, embeddings, meta)
            except OSError as e:  # an unwritable cache costs a recomputation later, nothing more
                warnings.warn(f"could not write the embedding cache {cached_folder}: {e}", stacklevel=2)
        write_encoder_state(out, state, embeddings)
    write_embeddings(out, embeddings, meta)
    return EmbeddingArtifact(out, embeddings, read_meta(out), reused)


__all__ = ["EMBEDDINGS_FILE", "META_FILE", "EmbeddingArtifact", "default_cache_dir", "embed_items"]
