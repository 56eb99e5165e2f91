"""Items added after training, through a trained multimodal encoder: the state a run saves (the
settings, the fusion's and alignment head's weights, the fitted attribute model) and the
embeddings of new items computed with it, as the training catalogue's items with the same
content got them."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.attributes import AttributeModel
from genrec.embed.encoder_config import MultimodalConfig
from genrec.embed.fusion_net import AlignmentHead, ContentFusion
from genrec.embed.fusion_training import FusionResult, batched_rows, unit_rows
from genrec.embed.image import ImageEncoder, embed_item_images, item_image_paths
from genrec.embed.modality import ModalityFeatures
from genrec.embed.runtime import torch_threads
from genrec.embed.template import Template
from genrec.embed.text import TextEncoder


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v.detach().cpu() for k, v in tensors.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def multimodal_state(encoder, fitted: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, tensors) of a multimodal encoder after encode(): the settings, the modalities the
    fusion reads and their widths, the fusion and alignment head's weights, the attribute model."""
    fusion: FusionResult = fitted["fusion"]
    names = list(fusion.info["content_modalities"])
    spec: dict = {
        "encoder": encoder.name,
        "multimodal": dataclasses.asdict(encoder.settings),
        "content_modalities": names,
        "modality_dims": {m: int(fusion.fusion.proj[m][0].normalized_shape[0]) for m in names},
        "behaviour_dim": int(fusion.behaviour.shape[1]) if fusion.behaviour is not None else None,
        "head": fusion.head is not None,
    }
    tensors = _prefixed("fusion.", fusion.fusion.state_dict())
    if fusion.head is not None:
        tensors.update(_prefixed("head.", fusion.head.state_dict()))
    if "text" in names:
        spec["text"] = encoder.text_encoder().describe()
    if "attributes" in names:
        model = fitted["attributes"]
        spec["attributes"] = model.spec()
        tensors.update(_prefixed("attributes.", model.tensors()))
    return spec, tensors


def multimodal_columns(spec: dict) -> dict[str, str]:
    """The item-table columns a new item needs, with their kind ("text", "attribute", "path")."""
    out: dict[str, str] = {}
    names = spec["content_modalities"]
    if "text" in names:
        out.update({c: "text" for c in Template(spec["text"]["template"]).fields})
    if "attributes" in names:
        out.update({c: "attribute" for c in spec["attributes"]["columns"]})
    image = spec["multimodal"]["image"]
    if "image" in names and not image["directory"]:
        out[image["column"]] = "path"
    return out


def new_item_content(
    spec: dict, tensors: dict[str, torch.Tensor], item_table, *, where: str, root=None, device="auto"
) -> tuple[np.ndarray, np.ndarray | None]:
    """(content [n, dim], the alignment head's behaviour estimate [n, Dc] or None), unit rows, of
    the rows of ``item_table`` through the saved fusion: what :func:`fuse` gives an item of the
    training catalogue that has the same content. ``root``: where relative image paths start."""
    settings = MultimodalConfig.from_dict(spec["multimodal"])
    names = spec["content_modalities"]
    dims = {m: int(spec["modality_dims"][m]) for m in names}
    n = item_table.num_rows
    feats: dict[str, ModalityFeatures] = {}
    if "text" in names:
        texts, vectors = TextEncoder.embed_new_texts(spec["text"], item_table, where=where, device=device)
        present = np.array([bool(t.strip()) for t in texts], dtype=bool)
        feats["text"] = ModalityFeatures("text", vectors, present)
    if "attributes" in names:
        model = AttributeModel.from_state(spec["attributes"], _unprefixed("attributes.", tensors))
        feats["attributes"] = model.transform(item_table, where)
    if "image" in names:
        s = settings.image
        paths = item_image_paths(
            item_table, column=s.column, root=s.root or root, directory=s.directory or None, where=where
        )
        ids = [str(v) for v in item_table.column("item_id").to_pylist()]
        encoder = ImageEncoder(batch_size=s.batch_size, device="cpu")
        feats["image"] = embed_item_images(paths, ids, encoder=encoder, on_unreadable=s.on_unreadable)
    for m in names:
        if feats[m].dimension != dims[m]:
            raise EmbeddingError(
                f"modality {m!r} gives {feats[m].dimension} dimensions for new items, the fusion was trained "
                f"on {dims[m]}: the encoder it uses changed since the run was trained"
            )
    fusion = ContentFusion(dims, settings.dim, settings.hidden, settings.dropout)
    _load_state(fusion, _unprefixed("fusion.", tensors), "fusion")
    fusion.eval()
    head = None
    if spec["head"]:
        head = AlignmentHead(settings.dim, settings.hidden, int(spec["behaviour_dim"]))
        _load_state(head, _unprefixed("head.", tensors), "alignment head")
        head.eval()
    x = {m: torch.from_numpy(feats[m].values) for m in names}
    mask = torch.from_numpy(np.stack([feats[m].present for m in names], axis=1))
    with torch.no_grad(), torch_threads(settings.threads):
        raw = torch.from_numpy(
            batched_rows(lambda idx: fusion({m: v[idx] for m, v in x.items()}, mask[idx]), n, "cpu")
        )
        estimate = unit_rows(batched_rows(lambda idx: head(raw[idx]), n, "cpu")) if head is not None else None
    return unit_rows(raw.numpy()), estimate


def new_item_embeddings(spec: dict, content: np.ndarray, behaviour: np.ndarray | None) -> np.ndarray:
    """``[content_weight * c ; behaviour_weight * b]``, as :meth:`FusionResult.embeddings`."""
    settings = MultimodalConfig.from_dict(spec["multimodal"])
    parts = [settings.content_weight * content]
    if behaviour is not None and settings.behaviour_weight > 0:
        parts.append(settings.behaviour_weight * behaviour)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise EmbeddingError(f"the saved {what} does not fit its settings ({e})") from None
