"""File fingerprints shared by every stage: one streamed sha256 (standard library only, so the
serving path on a machine without polars or faiss can use it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 22  # 4 MiB reads: flat memory for a multi-gigabyte embedding or checkpoint file


def file_sha256(path: str | Path, *, missing_ok: bool = False) -> str | None:
    """The sha256 hex digest of the file at ``path``; with ``missing_ok``, None when it is absent."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()
