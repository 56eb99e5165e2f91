"""Writing and fingerprinting files, shared by every stage: atomic writes (a temporary file
beside the target, renamed into place, so a reader never sees half a file; a staged folder put
in place of an old one, the old one restored if that fails), strict JSON, the
permissions a plainly created file gets, one streamed sha256 and an array's. The standard library
and numpy only (the figure writer imports matplotlib when called), so the serving path on a
machine without polars or faiss can use it, and core modules need not import genrec.bench for it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

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


def array_sha256(array) -> str:
    """sha256 of a numpy array's dtype, shape and bytes: names its exact content in manifests."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{list(array.shape)}".encode())
    h.update(array.view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def default_mode(base: int = 0o666) -> int:
    """``base`` under the process umask: the permissions a plainly created file (0o666) or folder
    (0o777) would get. Temporary files and folders are created private; what is renamed into
    place should not be."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def default_file_mode() -> int:
    return default_mode(0o666)


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block succeeds it gets a plain
    file's permissions and replaces ``path``, when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(staged: str | Path, final: str | Path) -> None:
    """Put the folder ``staged`` at ``final`` (the same file system), replacing any folder there:
    the old one is moved aside, put back if the new one cannot take its place, and deleted after.
    A reader finds the old folder or the new one, never a mix of the two."""
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.replace(staged, final)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, aside / final.name)
    try:
        os.replace(staged, final)
    except BaseException:
        os.replace(aside / final.name, final)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def finite_json(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN; null says "none")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def json_text(data, **options) -> str:
    """Strict JSON of ``data`` (non-finite floats written as null, never a bare NaN)."""
    return json.dumps(finite_json(data), allow_nan=False, **options)


def save_figure(fig, path: str | Path, *, dpi: int = 120) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` (format from its suffix) atomically, then
    close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
