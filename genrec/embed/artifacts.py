"""Item-embedding artifacts (``EMB/embeddings.npy`` + ``EMB/embed.json``): writing, reading, checking.

Shared by every encoder and by the tokenizer; numpy only, so it loads where no embedding model
is installed (the GPU machine).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from genrec.files import array_sha256, atomic_path

EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "embed.json"


class EmbeddingError(ValueError):
    """Embeddings that cannot be used: the message names the file and what is wrong with it."""


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def atomic_save_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def item_ids_sha256(item_ids: list[str]) -> str:
    """sha256 of the item ids in index order: two datasets with equal hashes index items alike."""
    h = hashlib.sha256()
    for item_id in item_ids:
        h.update(str(item_id).encode())
        h.update(b"\0")
    return h.hexdigest()


def check_embeddings(
    array: np.ndarray,
    *,
    num_items: int | None = None,
    dimension: int | None = None,
    source: str = "embeddings",
) -> np.ndarray:
    """``array`` as float32 [num_items, D] after checking it; EmbeddingError names ``source`` and the fault.

    Checked: a real-valued 2-D array, no NaN or infinite entries, ``num_items`` rows and
    ``dimension`` columns when those are given.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise EmbeddingError(
            f"{source}: embeddings must be 2-D [num_items, dimension], got shape {list(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise EmbeddingError(f"{source}: embeddings must be floating point, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise EmbeddingError(f"{source}: embeddings have dimension 0")
    if dimension is not None and array.shape[1] != dimension:
        raise EmbeddingError(f"{source}: embeddings have dimension {array.shape[1]}, expected {dimension}")
    if num_items is not None and array.shape[0] != num_items:
        raise EmbeddingError(
            f"{source}: {array.shape[0]} rows of embeddings for {num_items} items in the item table; "
            "row i must be item i (rerun `genrec embed` on this dataset)"
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(i) for i in bad[:8]) + (", ..." if len(bad) > 8 else "")
        raise EmbeddingError(f"{source}: {len(bad)} item(s) have NaN or infinite embeddings (items {shown})")
    return np.ascontiguousarray(array, dtype=np.float32)


def write_embeddings(out_dir: str | Path, embeddings: np.ndarray, meta: dict) -> Path:
    """Write ``EMB/embeddings.npy`` (float32) and ``EMB/embed.json``; returns ``out_dir``.

    embed.json is written last, so a directory with an embed.json always has its embeddings.
    """
    out_dir = Path(out_dir)
    embeddings = check_embeddings(embeddings, source=str(out_dir / EMBEDDINGS_FILE))
    (out_dir / META_FILE).unlink(missing_ok=True)
    atomic_save_npy(out_dir / EMBEDDINGS_FILE, embeddings)
    meta = {
        **meta,
        "num_items": int(embeddings.shape[0]),
        "dimension": int(embeddings.shape[1]),
        "embeddings_sha256": array_sha256(embeddings),
    }
    atomic_save_json(out_dir / META_FILE, meta)
    return out_dir


def read_meta(path: str | Path) -> dict:
    """embed.json of an embeddings directory, or {} when there is none."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbeddingError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise EmbeddingError(f"{meta_path}: expected a JSON object")
    return meta


def load_embeddings(
    path: str | Path,
    *,
    num_items: int | None = None,
    item_ids_hash: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Read and check embeddings: ``path`` is an EMB directory (embeddings.npy + embed.json) or an
    ``.npy`` file. Returns (float32 [N, D], the embed.json content or {}).

    ``num_items``: the item table's row count. ``item_ids_hash``: :func:`item_ids_sha256` of the
    dataset's item ids, compared with the one embed.json recorded.
    """
    path = Path(path)
    file = path / EMBEDDINGS_FILE if path.is_dir() else path
    if not file.is_file():
        hint = (
            f" (the folder has no {EMBEDDINGS_FILE}; create it with `genrec embed`)" if path.is_dir() else ""
        )
        raise EmbeddingError(f"{file}: no such file{hint}")
    meta = read_meta(path) if path.is_dir() else {}
    try:
        array = np.load(file, allow_pickle=False, mmap_mode=None)
    except ValueError as e:
        raise EmbeddingError(f"{file}: not a plain numpy array ({e})") from None
    if not isinstance(array, np.ndarray):
        raise EmbeddingError(f"{file}: expected one array (.npy), got {type(array).__name__}")
    dimension = meta.get("dimension")
    array = check_embeddings(array, num_items=num_items, dimension=dimension, source=str(file))
    if "num_items" in meta and meta["num_items"] != array.shape[0]:
        raise EmbeddingError(
            f"{file}: {array.shape[0]} rows, but {META_FILE} says num_items={meta['num_items']}"
        )
    recorded = meta.get("item_ids_sha256")
    if item_ids_hash is not None and recorded is not None and recorded != item_ids_hash:
        raise EmbeddingError(
            f"{path}: these embeddings were computed for a dataset whose items differ from this one "
            f"(item_ids_sha256 {recorded[:12]}... vs {item_ids_hash[:12]}...); rerun `genrec embed` on it"
        )
    return array, meta
