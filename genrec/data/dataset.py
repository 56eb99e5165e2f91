"""Reading a prepared dataset directory (docs/contracts.md) with numpy and pyarrow only.

This runs where polars is absent (the GPU machine): training, decoding and evaluation load data
through :func:`load_prepared`.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data.errors import PreparedDatasetError
from genrec.data.npy import load_npy
from genrec.data.split import Split, scheme_from_config
from genrec.data.writer import FORMAT_VERSION, MIN_SEQUENCE_LENGTH

_REQUIRED_MANIFEST_KEYS = ("format_version", "num_users", "num_items", "num_interactions")


class PreparedDataset:
    """A prepared dataset: per-user chronological item sequences (CSR) plus item and user tables.

    ``offsets`` int64 [num_users + 1] and ``items`` int64 [num_interactions]: user u's sequence is
    ``items[offsets[u]:offsets[u + 1]]``, oldest first. Tables are read on first use.
    """

    def __init__(self, path: Path, manifest: dict, offsets: np.ndarray, items: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.offsets = offsets
        self.items = items
        self.num_users = len(offsets) - 1
        self.num_items = int(manifest["num_items"])
        self.num_interactions = len(items)
        self._scheme = scheme_from_config(manifest.get("split"))
        self._splits: dict[str, Split] = {}

    def __repr__(self) -> str:
        return (
            f"PreparedDataset({self.name!r}, users={self.num_users}, items={self.num_items}, "
            f"interactions={self.num_interactions}, path={str(self.path)!r})"
        )

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @cached_property
    def fingerprint(self) -> str:
        """Names this dataset's content in downstream manifests: sha256 of its manifest (counts,
        split, options, the sources' sha256) without what differs between two preparations of the
        same inputs (the ``created`` time, the folders the files were read from)."""
        return manifest_fingerprint(self.manifest)

    @property
    def item_text_columns(self) -> list[str]:
        """Columns of the item table that carry text, best first (e.g. title, brand, categories)."""
        return list(self.manifest.get("item_text_columns", []))

    def sequence(self, u: int) -> np.ndarray:
        """User u's item indices, oldest first (a view)."""
        if not 0 <= u < self.num_users:
            raise IndexError(f"user index {u} out of range 0..{self.num_users - 1}")
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    @property
    def sequence_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item_table(self, columns: list[str] | None = None) -> pa.Table:
        """items.parquet: row i is item index i (item_idx, item_id, title, brand, categories, ...)."""
        return pq.read_table(self.path / "items.parquet", columns=columns)

    def user_table(self) -> pa.Table:
        return pq.read_table(self.path / "users.parquet")

    def interactions(self) -> pa.Table:
        """interactions.parquet: user_idx, item_idx, timestamp in the order of the sequences."""
        return pq.read_table(self.path / "interactions.parquet")

    def split(self, name: str) -> Split:
        """Evaluation rows of ``name`` ("train", "valid" or "test"): users, targets, histories."""
        if name not in self._splits:
            self._splits[name] = self._scheme.split(name, self.offsets, self.items)
        return self._splits[name]

    def train_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the [start, end) range of its training part in ``items``."""
        return self._scheme.train_bounds(self.offsets)

    def train_mask(self) -> np.ndarray:
        """bool [num_interactions]: True where the interaction belongs to the training part."""
        return self._scheme.train_mask(self.offsets)

    def cold_items(self) -> np.ndarray:
        """int64 [C] sorted: items a cold-start split withheld from training (genrec.data.cold_start); else empty."""
        return getattr(self._scheme, "cold_items", np.zeros(0, dtype=np.int64))

    def train_item_counts(self) -> np.ndarray:
        """int64 [num_items]: interactions per item in the training part only (popularity)."""
        return np.bincount(self.items[self.train_mask()], minlength=self.num_items).astype(np.int64)


def manifest_fingerprint(manifest: dict) -> str:
    """sha256 of ``manifest`` as canonical JSON, less its creation time and with file paths reduced
    to file names: preparing the same inputs with the same settings gives the same fingerprint."""
    content = {k: v for k, v in manifest.items() if k != "created"}
    content["sources"] = [
        {**s, "path": Path(str(s["path"])).name} if isinstance(s, dict) and "path" in s else s
        for s in content.get("sources", [])
    ]
    options = dict(content.get("options") or {})
    for key in ("source", "items_file"):
        if isinstance(options.get(key), str):
            options[key] = Path(options[key]).name
    content["options"] = options
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_prepared(path: str | Path) -> PreparedDataset:
    """Open a prepared dataset directory, checking its arrays against its manifest."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise PreparedDatasetError(
            f"{path} is not a prepared dataset: {manifest_path.name} is missing "
            "(create one with `genrec data prepare`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PreparedDatasetError(f"{manifest_path}: not valid JSON ({e})") from None
    missing = [k for k in _REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise PreparedDatasetError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise PreparedDatasetError(
            f"{manifest_path}: field 'format_version' is {manifest['format_version']!r}; this genrec "
            f"reads version {FORMAT_VERSION} (prepare the dataset again)"
        )
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        if not (path / name).is_file():
            raise PreparedDatasetError(f"{path}: {name} is missing")
    offsets = _load_array(path / "sequences" / "offsets.npy")
    items = _load_array(path / "sequences" / "items.npy")
    _check_consistent(path, manifest, offsets, items)
    return PreparedDataset(path, manifest, offsets, items)


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise PreparedDatasetError(f"{path} is missing")
    array = load_npy(path, PreparedDatasetError)
    if array.dtype != np.int64 or array.ndim != 1:
        raise PreparedDatasetError(f"{path}: expected int64 [n], got {array.dtype} {list(array.shape)}")
    return array


def _check_consistent(path: Path, manifest: dict, offsets: np.ndarray, items: np.ndarray) -> None:
    where = path / "sequences"
    if len(offsets) != manifest["num_users"] + 1:
        raise PreparedDatasetError(
            f"{where}/offsets.npy has {len(offsets)} entries; manifest num_users={manifest['num_users']} needs "
            f"{manifest['num_users'] + 1}"
        )
    if len(items) != manifest["num_interactions"]:
        raise PreparedDatasetError(
            f"{where}/items.npy has {len(items)} entries; manifest num_interactions={manifest['num_interactions']}"
        )
    if offsets[0] != 0 or offsets[-1] != len(items):
        raise PreparedDatasetError(f"{where}/offsets.npy must start at 0 and end at {len(items)}")
    lengths = np.diff(offsets)
    if len(lengths) and lengths.min() < MIN_SEQUENCE_LENGTH:
        u = int(np.argmin(lengths))
        raise PreparedDatasetError(
            f"{where}/offsets.npy: user {u} has {int(lengths[u])} interactions; every user needs "
            f"{MIN_SEQUENCE_LENGTH} (negative means offsets decrease)"
        )
    if len(items) and (items.min() < 0 or items.max() >= manifest["num_items"]):
        raise PreparedDatasetError(
            f"{where}/items.npy holds item indices outside 0..{manifest['num_items'] - 1} (manifest num_items)"
        )
