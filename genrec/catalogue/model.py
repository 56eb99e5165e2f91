"""A trained model's per-item tables, extended for items added after training.

Models with content vectors (``ItemDecoder.add_items``) append the new items' content and mark
them as never trained, so they score by their content. Other models with a free item-embedding
table (``model.item_emb``) get zero rows: the new items then score through their semantic IDs
alone. Models without per-item tables need nothing. The result must be exactly the model that
``build_model`` makes for the larger catalogue, so the updated run folder loads like any other.
"""

from __future__ import annotations

import inspect
import json
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genrec.catalogue.run_encoders import NewItemsError
from genrec.models import build_model
from genrec.train.checkpoint import load_model_weights


def saved_content_dim(weights: Path) -> int:
    """The width of the content table (``item_content``) in a saved model, 0 when it has none
    (read from the safetensors header, without loading the tensors)."""
    with open(weights, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    entry = header.get("item_content")
    return int(entry["shape"][1]) if entry else 0


def build_run_model(config, level_sizes: list[int], num_items: int, content_dim: int = 0):
    """``genrec.models.build_model`` for a run's config (``content_dim`` where the model takes one)."""

    extra = {}
    if content_dim and "content_dim" in inspect.signature(build_model).parameters:
        extra["content_dim"] = content_dim
    return build_model(config.model, level_sizes, config.train.max_history, num_items, **extra)


def extend_item_embeddings(model: nn.Module, n: int) -> None:
    """Append ``n`` zero rows to ``model.item_emb`` (when the model has one) and count them."""
    old = getattr(model, "item_emb", None)
    if old is None:
        return
    new = nn.Embedding(
        old.num_embeddings + n, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
    )
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = 0
    model.item_emb = new
    model.num_items = old.num_embeddings + n


def add_model_items(model: nn.Module, content: np.ndarray) -> str:
    """Extend ``model``'s per-item tables by the items whose item embeddings are ``content`` [n, D];
    returns how ("content vectors", "zero item embeddings" or "nothing to extend")."""
    if hasattr(model, "add_items") and getattr(model, "content_dim", 1):
        model.add_items(torch.as_tensor(np.asarray(content, dtype=np.float32)))
        return "content vectors"
    if getattr(model, "item_emb", None) is not None:
        extend_item_embeddings(model, len(content))
        return "zero item embeddings"
    return "nothing to extend"


def extended_model(config, level_sizes: list[int], weights: Path, num_items: int, content: np.ndarray):
    """The run's model (``weights``, ``num_items`` items) with ``content`` [n, D] appended, rebuilt
    as ``build_model`` makes it for ``num_items + n`` items; NewItemsError when it cannot be."""

    content_dim = saved_content_dim(weights)
    if content_dim and content.shape[1] != content_dim:
        raise NewItemsError(
            f"{weights}: the model's content table is {content_dim} wide, the new items' embeddings "
            f"{content.shape[1]}: the run's encoders and model disagree"
        )
    model = build_run_model(config, level_sizes, num_items, content_dim)
    load_model_weights(weights, model)
    how = add_model_items(model, content)
    fresh = build_run_model(config, level_sizes, num_items + len(content), content_dim)
    try:
        fresh.load_state_dict(model.state_dict())
    except RuntimeError as e:
        raise NewItemsError(
            f"this {config.model.kind} model cannot take new items: extended, its weights no longer match "
            f"the model built for {num_items + len(content)} items ({str(e).splitlines()[0]})"
        ) from None
    return fresh, how


__all__ = [
    "add_model_items",
    "build_run_model",
    "extend_item_embeddings",
    "extended_model",
    "saved_content_dim",
]
