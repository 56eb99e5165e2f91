"""What an item encoder keeps to embed items added after it ran: ``EMB/encoder_state.*``.

An encoder that can embed new items later (``text``, ``multimodal``, ``diffusion``) saves, beside
its embeddings, everything that embedding needs and the item table alone cannot give back:

```
EMB/encoder_state.safetensors  fitted tensors (fusion network, attribute model, denoiser ...)
EMB/encoder_state.json         format_version, encoder, its settings ("spec"), dimension,
                               embeddings_sha256 (the embeddings this state made), tensors_sha256
```

The JSON is written last and names the checksum of the tensors file and of the embeddings: a
folder whose JSON exists holds a complete state, and a state never pairs with other embeddings.

The encoder protocol (duck-typed, optional): an instance's ``new_item_state() -> (spec, tensors)``
after ``encode``; the class's ``new_item_columns(spec) -> {column: kind}`` (kind "text",
"attribute" or "path") and ``embed_new_items(spec, tensors, item_table, indices, *, where, root,
device) -> float32 [rows, D]``, where ``indices`` are the items' new indices (the diffusion encoder
seeds its sampling with them). ``state_from_meta(meta)`` may rebuild a tensor-free state from an
older embed.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genrec.embed.artifacts import EmbeddingError, atomic_save_json, check_embeddings
from genrec.embed.registry import get_encoder
from genrec.files import array_sha256, atomic_path, file_sha256

FORMAT_VERSION = 1
STATE_FILE = "encoder_state.json"
TENSORS_FILE = "encoder_state.safetensors"
STATE_FILES = (STATE_FILE, TENSORS_FILE)


class EncoderStateError(EmbeddingError):
    """An encoder state that is missing, damaged or does not belong to its embeddings."""


def encoder_new_item_state(encoder) -> tuple[dict, dict] | None:
    """``encoder.new_item_state()`` for encoders that can embed new items (after ``encode``), else None."""
    get = getattr(encoder, "new_item_state", None)
    return get() if get is not None else None


def clear_encoder_state(folder: str | Path) -> None:
    """Remove a state from ``folder`` (the JSON first, so no half state is ever read as whole)."""
    for name in STATE_FILES:
        (Path(folder) / name).unlink(missing_ok=True)


def write_encoder_state(folder: str | Path, state: tuple[dict, dict] | None, embeddings: np.ndarray) -> None:
    """Write ``state`` = (spec, tensors) of the encoder that made ``embeddings`` into ``folder``; with
    None, remove any earlier state (the folder's embeddings are about to be replaced)."""
    folder = Path(folder)
    clear_encoder_state(folder)
    if state is None:
        return
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    save_state(folder, *state, dimension=embeddings.shape[1], embeddings_sha256=array_sha256(embeddings))


def save_state(folder: Path, spec: dict, tensors: dict, *, dimension: int, embeddings_sha256: str) -> None:
    """Write a state's two files into ``folder``, the JSON last."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / TENSORS_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    atomic_save_json(
        folder / STATE_FILE,
        {
            "format_version": FORMAT_VERSION,
            "encoder": spec["encoder"],
            "spec": spec,
            "dimension": int(dimension),
            "embeddings_sha256": embeddings_sha256,
            "tensors_sha256": file_sha256(folder / TENSORS_FILE),
        },
    )


def copy_encoder_state(source: str | Path, target: str | Path) -> None:
    """Copy the state of ``source`` to ``target`` (or clear ``target``'s when ``source`` has none)."""
    source, target = Path(source), Path(target)
    clear_encoder_state(target)
    if not (source / STATE_FILE).is_file():
        return
    for name in (TENSORS_FILE, STATE_FILE):  # the JSON last
        with atomic_path(target / name) as tmp:
            shutil.copyfile(source / name, tmp)


def has_encoder_state(folder: str | Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def reuse_state(encoder, source: str | Path, target: str | Path, embeddings: np.ndarray) -> bool:
    """When ``embeddings`` made earlier in ``source`` are reused for ``target`` (the same folder or
    not): give ``target`` the encoder's state. False when that is impossible, so the embeddings
    must be computed again: the encoder's state is fitted while encoding (``state_needs_encode``,
    the default) and ``source`` has none (it was made before encoders saved their state)."""
    source, target = Path(source), Path(target)
    if not hasattr(encoder, "new_item_state"):
        if source != target:
            clear_encoder_state(target)
        return True
    if has_encoder_state(source):
        if source != target:
            copy_encoder_state(source, target)
        return True
    if getattr(encoder, "state_needs_encode", True):
        return False
    write_encoder_state(target, encoder.new_item_state(), embeddings)  # settings only: no fitting
    return True


def read_encoder_state(folder: str | Path, embeddings_sha256: str | None = None) -> tuple[dict, dict]:
    """(the state JSON, the tensors) of ``folder``, checked: the tensors file's checksum, and the
    embeddings the state made when ``embeddings_sha256`` is given."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise EncoderStateError(f"{folder} holds no encoder state ({STATE_FILE} is missing)")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EncoderStateError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        version = info.get("format_version") if isinstance(info, dict) else None
        raise EncoderStateError(f"{path}: format_version {version!r}, this genrec reads {FORMAT_VERSION}")
    for key in ("encoder", "spec", "dimension", "embeddings_sha256", "tensors_sha256"):
        if key not in info:
            raise EncoderStateError(f"{path}: field {key!r} is missing")
    if embeddings_sha256 is not None and info["embeddings_sha256"] != embeddings_sha256:
        raise EncoderStateError(
            f"{path} was saved with other embeddings (sha256 {info['embeddings_sha256'][:12]}..., these are "
            f"{embeddings_sha256[:12]}...): the folder mixes two encoder runs"
        )
    tensors_path = folder / TENSORS_FILE
    if not tensors_path.is_file():
        raise EncoderStateError(f"{tensors_path} is missing")
    actual = file_sha256(tensors_path)
    if actual != info["tensors_sha256"]:
        raise EncoderStateError(
            f"{tensors_path} is damaged: sha256 {actual[:12]}..., {STATE_FILE} records {info['tensors_sha256'][:12]}..."
        )
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as e:
        raise EncoderStateError(f"{tensors_path}: not a readable safetensors file ({e})") from None
    return info, tensors


def encoder_class(name: str):
    """The registered encoder class ``name`` when it can embed new items, else EncoderStateError."""

    try:
        cls = get_encoder(name)
    except ValueError as e:
        raise EncoderStateError(str(e)) from None
    if not hasattr(cls, "embed_new_items"):
        raise EncoderStateError(f"the {name!r} encoder cannot embed items added after it ran")
    return cls


def new_item_columns(info: dict) -> dict[str, str]:
    """The item-table columns the state's encoder reads from a new item, with their kind."""
    return encoder_class(info["encoder"]).new_item_columns(info["spec"])


def embed_new_items(
    info: dict,
    tensors: dict,
    item_table,
    indices,
    *,
    where: str,
    root: str | Path | None = None,
    device: str = "auto",
) -> np.ndarray:
    """float32 [rows, D]: the rows of ``item_table`` (new items with indices ``indices``) embedded
    as the state's encoder embedded its catalogue. ``root``: where relative image paths start."""

    cls = encoder_class(info["encoder"])
    out = cls.embed_new_items(
        info["spec"], tensors, item_table, indices, where=where, root=root, device=device
    )
    return check_embeddings(
        out, num_items=item_table.num_rows, dimension=int(info["dimension"]), source=f"new items of {where}"
    )


__all__ = [
    "STATE_FILE",
    "STATE_FILES",
    "TENSORS_FILE",
    "EncoderStateError",
    "clear_encoder_state",
    "copy_encoder_state",
    "embed_new_items",
    "encoder_class",
    "encoder_new_item_state",
    "has_encoder_state",
    "new_item_columns",
    "read_encoder_state",
    "reuse_state",
    "save_state",
    "write_encoder_state",
]
