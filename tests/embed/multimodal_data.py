"""A tiny clustered catalogue for the multimodal and diffusion tests.

Items fall into three kinds (lipsticks, face creams, shampoos); every user buys within one kind,
so co-occurrence separates the kinds, and so do the attributes and a synthetic text vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrec.data import write_prepared
from genrec.embed.encoder_config import MultimodalConfig
from genrec.embed.modality import ModalityFeatures

KINDS = [
    ("Matte Lipstick", ["Glow", "Rouge"], ["Beauty", "Makeup", "Lips"]),
    ("Face Cream", ["Dermia", "Aqua"], ["Beauty", "Skin Care", "Face"]),
    ("Argan Shampoo", ["Maroc", "Silk"], ["Beauty", "Hair Care", "Shampoo"]),
]


def kind_of(num_items: int) -> np.ndarray:
    return np.arange(num_items) % len(KINDS)


def clustered_dataset(root: Path, num_items: int = 60, num_users: int = 240, seed: int = 0, **kw) -> Path:
    """A prepared dataset: item i is of kind i % 3; each user's 5-9 items are of one kind."""
    rng = np.random.default_rng(seed)
    kinds = kind_of(num_items)
    rows = []
    for i in range(num_items):
        word, brands, categories = KINDS[kinds[i]]
        rows.append(
            {"item_id": i, "title": f"{word} no. {i}", "brand": brands[i % 2], "categories": categories}
        )
    sequences = []
    for _ in range(num_users):
        pool = np.flatnonzero(kinds == rng.integers(len(KINDS)))
        sequences.append(rng.choice(pool, size=int(rng.integers(5, 10)), replace=False).tolist())
    return write_prepared(root, sequences, item_ids=range(num_items), items=kw.pop("items", rows), **kw)


def synthetic_text(num_items: int, dim: int = 12, seed: int = 0) -> ModalityFeatures:
    """A text modality that knows each item's kind (kind centre + noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(KINDS), dim))
    values = centres[kind_of(num_items)] + 0.3 * rng.normal(size=(num_items, dim))
    return ModalityFeatures("text", values.astype(np.float32), np.ones(num_items, dtype=bool))


def small_config(**overrides) -> MultimodalConfig:
    """Settings small enough for a test: a few seconds on a CPU."""
    config = MultimodalConfig(
        dim=16,
        hidden=32,
        epochs=40,
        batch_size=32,
        patience=0,
        holdout=0.1,
        modalities=["text", "attributes", "collaborative"],
    )
    config.attributes.dim = 6
    config.collaborative.dim = 8
    for key, value in overrides.items():
        setattr(config, key, value)
    return config.validate()
