"""Where genrec keeps data: ``$GENREC_DATA_DIR``, else a per-user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

from genrec.data.registry import get_dataset

DATA_DIR_ENV = "GENREC_DATA_DIR"


def default_data_dir() -> Path:
    """``$XDG_CACHE_HOME/genrec`` (``~/.cache/genrec`` when XDG_CACHE_HOME is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "genrec"


def data_dir(create: bool = False) -> Path:
    """The root folder of raw datasets: ``$GENREC_DATA_DIR`` if set, else :func:`default_data_dir`.

    With ``create=True`` the folder is made on demand (downloads need it; reads do not).
    """
    env = os.environ.get(DATA_DIR_ENV)
    root = Path(env).expanduser() if env else default_data_dir()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def dataset_dir(name: str, create: bool = False) -> Path:
    """The folder of a registered dataset (see :mod:`genrec.data.registry`) under :func:`data_dir`."""

    path = data_dir(create=create) / get_dataset(name).folder
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
