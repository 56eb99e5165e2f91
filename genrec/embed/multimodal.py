"""The multimodal encoder: text, image, attributes and collaborative signal fused into one embedding.

Content modalities (text, image, attributes) each pass through their own projection into a
shared width; a learned attention pool weighs the modalities an item has (absent ones are masked
out, and a learned "nothing" token keeps an item with no content well defined) into one content
embedding ``c``. The fusion is trained by contrastive alignment (InfoNCE, in-batch negatives):
an alignment head maps ``c`` into collaborative space, where it must pick out the item's own
collaborative embedding ``b`` (learned from the training split). Modality dropout teaches it to
work from any subset of modalities. Without the collaborative modality, it aligns two random
modality subsets of the same item instead.

An item's embedding is ``[content_weight * c ; behaviour_weight * b]`` with both parts unit
length; an item without a collaborative embedding (no training interactions) gets the alignment
head's estimate of ``b`` from its content, or a generated one from the diffusion encoder.
A seeded share of the warm items is held out of training as a cold-start probe: how well their
``b`` is recovered from content alone is written to embed.json.

Where each part lives: the modalities of a dataset in ``gather``, the networks in ``fusion_net``,
training and embedding in ``fusion_training``, the probe in ``behaviour_probe``, items added after
training in ``multimodal_state``; this module is the registered encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.encoder_config import MultimodalConfig
from genrec.embed.fusion_training import FusionResult, fuse
from genrec.embed.gather import gather_modalities
from genrec.embed.image import item_image_paths
from genrec.embed.modality import ModalityFeatures
from genrec.embed.multimodal_state import (
    multimodal_columns,
    multimodal_state,
    new_item_content,
    new_item_embeddings,
)
from genrec.embed.registry import ItemEncoder
from genrec.embed.text import TextEncoder
from genrec.files import file_sha256
from genrec.settings import hashed_settings


def encode_multimodal(
    dataset,
    config: MultimodalConfig,
    *,
    text: ModalityFeatures | None = None,
    image_encoder=None,
    log=print,
    fitted: dict | None = None,
) -> tuple[np.ndarray, dict, FusionResult]:
    """(embeddings [num_items, D], embed.json fields, the trained fusion) for a prepared dataset;
    ``fitted`` receives the fitted attribute model (see :func:`gather_modalities`)."""
    config.validate()
    modalities = gather_modalities(
        dataset, config, text=text, image_encoder=image_encoder, log=log, fitted=fitted
    )
    result = fuse(modalities, config, log=log)
    meta = {
        "encoder": "multimodal",
        "modalities": {name: feats.summary() for name, feats in modalities.items()},
        "fusion": result.info,
        "layout": _layout(result, config),
    }
    return result.embeddings(config), meta, result


def _layout(result: FusionResult, config: MultimodalConfig) -> dict:
    dims = {"content": [0, result.content.shape[1]]}
    if result.behaviour is not None and config.behaviour_weight > 0:
        dims["behaviour"] = [result.content.shape[1], result.content.shape[1] + result.behaviour.shape[1]]
    return {
        "columns": dims,
        "content_weight": config.content_weight,
        "behaviour_weight": config.behaviour_weight,
    }


ENCODER_VERSION = "multimodal-2"  # bump when the algorithm changes what equal settings produce


def settings_of(config, name: str, cls: type):
    """The ``name`` settings section of an EmbedConfig, as ``cls`` (a table is converted, then checked)."""
    value = getattr(config, name, None)
    if value is None:
        return cls().validate()
    if isinstance(value, dict):
        return cls.from_dict(value, f"embed.{name}")
    if not isinstance(value, cls):
        raise EmbeddingError(f"embed.{name} must be a {cls.__name__} or a table, got {type(value).__name__}")
    return value.validate()


def stderr_log(enabled: bool):
    if not enabled:
        return lambda message: None
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    return lambda message: console.print(message, markup=False)


def multimodal_fingerprint(encoder, dataset, settings: MultimodalConfig, extra: dict | None = None) -> str:
    """Hash of what the embeddings depend on: the text inputs and model, the item table, the training
    split (the dataset's manifest), image files (path, size, mtime) and every cache-relevant setting."""
    parts: dict = {
        "version": ENCODER_VERSION,
        "settings": hashed_settings(settings),
        "dataset_manifest": dataset.fingerprint,
        "items_parquet": file_sha256(Path(dataset.path) / "items.parquet"),
        **(extra or {}),
    }
    if "text" in settings.modalities:
        parts["text"] = encoder.text_encoder().fingerprint(dataset)
    if "image" in settings.modalities:
        s = settings.image
        paths = item_image_paths(
            dataset.item_table(), column=s.column, root=s.root or dataset.path, directory=s.directory or None
        )
        h = hashlib.sha256()
        for p in paths:
            stat = p.stat() if p is not None and p.is_file() else None
            h.update(f"{p}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode())
        parts["images"] = h.hexdigest()
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class MultimodalEncoder(ItemEncoder):
    """``genrec embed --encoder multimodal``: settings from ``config.multimodal`` ([embed.multimodal]).

    The text modality is the ``text`` encoder's output for the same config (model, template), taken
    from the embedding cache when it was computed before.
    """

    name = "multimodal"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.settings = settings_of(config, "multimodal", MultimodalConfig)
        self._meta: dict = {}
        self._text_encoder = None

    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = TextEncoder(self.config)
        return self._text_encoder

    def text_modality(self, dataset) -> ModalityFeatures:
        """The text encoder's embeddings (through the shared cache); items whose text is empty are absent."""
        from genrec.embed.embedding_cache import (
            embed_items,  # it imports the encoder registry: a cycle at import
        )

        artifact = embed_items(dataset, dataclasses.replace(self.config, encoder="text"))
        texts = self.text_encoder().texts(dataset)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        info = {
            "model": artifact.meta.get("model"),
            "template": self.config.template,
            "cache": str(artifact.path),
        }
        return ModalityFeatures("text", artifact.embeddings, present, info).check_items(dataset.num_items)

    def describe(self) -> dict:
        return {"multimodal_settings": dataclasses.asdict(self.settings), **self._meta}

    def fingerprint(self, dataset) -> str:
        return multimodal_fingerprint(self, dataset, self.settings)

    def encode(self, dataset) -> np.ndarray:
        log = stderr_log(self.config.progress)
        text = self.text_modality(dataset) if "text" in self.settings.modalities else None
        fitted: dict = {}
        embeddings, meta, fusion = encode_multimodal(
            dataset, self.settings, text=text, log=log, fitted=fitted
        )
        self._meta = meta
        self._fitted = {"fusion": fusion, **fitted}
        return embeddings

    # ---- embedding items added after training (genrec.embed.state, genrec.embed.multimodal_state) ----
    def new_item_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """What :meth:`embed_new_items` needs, after :meth:`encode`: the settings (JSON) and the
        fitted networks and attribute model (tensors)."""
        return multimodal_state(self, self._fitted)

    @classmethod
    def new_item_columns(cls, spec: dict) -> dict[str, str]:
        return multimodal_columns(spec)

    @classmethod
    def embed_new_items(cls, spec, tensors, item_table, indices, *, where, root=None, device="auto"):
        content, estimate = new_item_content(spec, tensors, item_table, where=where, root=root, device=device)
        return new_item_embeddings(spec, content, estimate)
