"""The item encoders ``genrec embed --encoder NAME`` can use, by name.

An encoder turns a prepared dataset's items into one vector each. Built-in encoders are named
by import path and imported on first use, so listing them never imports a model library.
Another module adds one with :func:`register_encoder`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from genrec.data import PreparedDataset
    from genrec.embed.config import EmbedConfig


class ItemEncoder(ABC):
    """Embeds the items of a prepared dataset; row i of the result is item index i.

    Subclasses set ``name`` and implement :meth:`describe`, :meth:`fingerprint` and :meth:`encode`.
    The shared pipeline (:func:`genrec.embed.embed_items`) does the caching, the checks and the
    writing.
    """

    name: str = ""

    def __init__(self, config: EmbedConfig) -> None:
        self.config = config

    @abstractmethod
    def describe(self) -> dict:
        """What goes into embed.json besides the common fields: model, template, options."""

    @abstractmethod
    def fingerprint(self, dataset: PreparedDataset) -> str:
        """A hash of everything the embeddings depend on (model weights, inputs, options), so equal
        fingerprints mean equal embeddings; the cache is keyed by it."""

    @abstractmethod
    def encode(self, dataset: PreparedDataset) -> np.ndarray:
        """float32 [dataset.num_items, D]."""


_ENCODERS: dict[str, str | type[ItemEncoder]] = {
    "text": "genrec.embed.text:TextEncoder",
    "multimodal": "genrec.embed.multimodal:MultimodalEncoder",
    "diffusion": "genrec.embed.diffusion_encoder:DiffusionEncoder",
}


def register_encoder(name: str, encoder: str | type[ItemEncoder]) -> None:
    """Make ``encoder`` (a class, or "module:Class" imported on first use) available as ``name``."""
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"encoder name must be a simple word, got {name!r}")
    _ENCODERS[name] = encoder


def encoder_names() -> list[str]:
    return sorted(_ENCODERS)


def get_encoder(name: str) -> type[ItemEncoder]:
    """The encoder class registered as ``name``; ValueError listing the known names otherwise."""
    if name not in _ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(encoder_names())}")
    entry = _ENCODERS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _ENCODERS[name] = entry
    return entry
