"""The modalities of a prepared dataset, as the multimodal encoder reads them: text (computed by
the text encoder and handed in), images, attributes and the collaborative signal of the training
split, each a :class:`ModalityFeatures` whose row i is item i."""

from __future__ import annotations

import time

import numpy as np

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.attributes import fit_attributes
from genrec.embed.collaborative import embed_collaborative
from genrec.embed.encoder_config import MultimodalConfig
from genrec.embed.image import EMBEDDING_DIM, ImageEncoder, embed_item_images, item_image_paths
from genrec.embed.modality import ModalityFeatures


def text_presence(item_table, text_columns: list[str]) -> np.ndarray:
    """bool [num_items]: the item has a non-empty value in at least one text column."""
    present = np.zeros(item_table.num_rows, dtype=bool)
    for column in text_columns:
        if column not in item_table.column_names:
            continue
        for i, v in enumerate(item_table.column(column).to_pylist()):
            if v is not None and (v if isinstance(v, list) else str(v).strip()):
                present[i] = True
    return present


def text_modality(dataset, embeddings: np.ndarray, info: dict | None = None) -> ModalityFeatures:
    """Text embeddings [num_items, D] of ``dataset`` as a modality (items without any text are absent)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != dataset.num_items:
        raise EmbeddingError(
            f"text embeddings have shape {list(embeddings.shape)}; {dataset.path} has {dataset.num_items} items "
            "(row i must be item i: embed the same prepared dataset)"
        )
    columns = dataset.item_text_columns or ["title"]
    table = dataset.item_table([c for c in columns if c in dataset.item_table().column_names] or None)
    present = text_presence(table, columns)
    return ModalityFeatures(
        "text", embeddings.astype(np.float32), present, {"columns": columns, **(info or {})}
    )


def gather_modalities(
    dataset,
    config: MultimodalConfig,
    *,
    text: ModalityFeatures | None = None,
    image_encoder=None,
    log=print,
    fitted: dict | None = None,
) -> dict[str, ModalityFeatures]:
    """Each configured modality of ``dataset``: text must be given (the text encoder computes it).

    ``fitted`` (a dict) receives the fitted attribute model under "attributes" (to embed new items later).
    """
    out: dict[str, ModalityFeatures] = {}
    for name in config.modalities:
        start = time.perf_counter()
        if name == "text":
            if text is None:
                raise EmbeddingError(
                    "the multimodal encoder needs the items' text embeddings (modality 'text')"
                )
            out[name] = text.check_items(dataset.num_items)
        elif name == "image":
            out[name] = image_modality(dataset, config, image_encoder)
        elif name == "attributes":
            s = config.attributes
            out[name], attribute_model = fit_attributes(
                dataset.item_table(),
                columns=s.columns,
                dim=s.dim,
                min_count=s.min_count,
                seed=config.seed,
                where=str(dataset.path / "items.parquet"),
            )
            if fitted is not None:
                fitted["attributes"] = attribute_model
        elif name == "collaborative":
            s = config.collaborative
            out[name] = embed_collaborative(
                dataset,
                dim=s.dim,
                window=s.window,
                shift=s.shift,
                context_power=s.context_power,
                seed=config.seed,
            )
        feats = out[name].check_items(dataset.num_items)
        log(
            f"  {name}: {int(feats.present.sum()):,} of {feats.num_items:,} items, dimension {feats.dimension} "
            f"({time.perf_counter() - start:.1f}s)"
        )
    return out


def image_modality(dataset, config: MultimodalConfig, image_encoder=None) -> ModalityFeatures:
    """The items' image embeddings; a modality with every item absent when no item has an image."""
    s = config.image
    table = dataset.item_table()
    paths = item_image_paths(
        table,
        column=s.column,
        root=s.root or dataset.path,
        directory=s.directory or None,
        where=str(dataset.path / "items.parquet"),
    )
    ids = [str(v) for v in table.column("item_id").to_pylist()]
    if not any(p is not None for p in paths):  # reported as absent, never zero vectors posing as images
        return ModalityFeatures(
            "image",
            np.zeros((len(ids), EMBEDDING_DIM), np.float32),
            np.zeros(len(ids), bool),
            {"with_image": 0, "without_image": len(ids)},
        )
    encoder = image_encoder or ImageEncoder(batch_size=s.batch_size, device=config.device)
    return embed_item_images(paths, ids, encoder=encoder, on_unreadable=s.on_unreadable)
