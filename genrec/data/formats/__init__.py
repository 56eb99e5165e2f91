"""Readers of raw data formats; each turns its files into a ``genrec.data.prepare.RawData``.

- ``p5``: P5/S3-Rec sequences, id maps and item text (``formats/p5.py``);
- ``amazon2014``: original Amazon 2014 reviews and metadata (``formats/amazon2014.py``);
- ``movielens``: MovieLens 100K and 1M (``formats/movielens.py``);
- ``table``: any Parquet/CSV with user, item and timestamp columns (``formats/table.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def reader(fmt: str) -> Callable:
    """The ``read(source, policy, **options) -> RawData`` function of a format (imports polars)."""
    return importlib.import_module(f"genrec.data.formats.{fmt}").read
