"""Fixtures for the data tests: the real datasets (skipped when absent) and small builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def real_dataset(relative: str, *files: str) -> Path:
    """``$GENREC_DATA_DIR/relative``, or skip the test when the variable or the files are missing."""
    root = os.environ.get("GENREC_DATA_DIR")
    if not root:
        pytest.skip("GENREC_DATA_DIR is not set")
    folder = Path(root) / relative
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"{folder} lacks {', '.join(missing)}")
    return folder


_PREPARED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def prepared_beauty(tmp_path_factory) -> Path:
    """Amazon Beauty prepared once per test session from the P5 files (data and eval tests share it)."""
    from genrec.data.prepare import prepare_dataset

    source = real_dataset(
        "amazon2014/beauty", "sequential_data.txt", "datamaps.json.gz", "item_meta.jsonl.gz"
    )
    if "beauty" not in _PREPARED:
        _PREPARED["beauty"] = prepare_dataset("p5", source, tmp_path_factory.mktemp("beauty") / "prepared")
    return _PREPARED["beauty"]
