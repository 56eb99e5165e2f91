"""A tiny finished run whose encoders can embed new items: multimodal item embeddings (attributes +
co-occurrence, no text model), residual k-means IDs, an ItemDecoder with an item head and fusion."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest

from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.train.helpers import synthetic_world

NUM_ITEMS = 24


def item_rows(num_items: int = NUM_ITEMS) -> list[dict]:
    """Item i: brand i // 4 (neighbours in the cycle share it), category i // 8."""
    return [
        {
            "item_id": f"I{i:03d}",
            "title": f"item {i} of brand {i // 4}",
            "brand": f"Brand{i // 4}",
            "categories": ["Beauty", f"Cat{i // 8}"],
        }
        for i in range(num_items)
    ]


def run_overrides(prepared: Path, cache: Path) -> list[str]:
    from tests.pipeline.conftest import tiny_overrides

    return tiny_overrides(
        prepared,
        cache,
        "embed.encoder=multimodal",
        f"embed.cache_dir={cache / 'embeddings'}",
        'embed.multimodal.modalities=["attributes", "collaborative"]',
        "embed.multimodal.dim=8",
        "embed.multimodal.hidden=16",
        "embed.multimodal.epochs=10",
        "embed.multimodal.batch_size=8",
        "embed.multimodal.patience=0",
        "embed.multimodal.attributes.dim=4",
        "embed.multimodal.collaborative.dim=4",
        "embed.progress=false",
        "tokenize.codebook_size=8",
        "model.kind=item_decoder",
        "model.item_embeddings=true",
        "model.item_loss=1.0",
        "model.exclude_seen=true",
        "model.tune_fusion=true",
        "model.fusion_candidates=4",
        "train.epochs=4",
    )


@pytest.fixture(scope="session")
def catalogue_run(tmp_path_factory):
    """(run folder, its embed output folder, its config): trained once per session, then only read."""
    from genrec.catalogue import save_run_encoders
    from genrec.config import load_config
    from genrec.data import write_prepared
    from genrec.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("catalogue")
    offsets, flat, _, _ = synthetic_world(num_users=60, num_items=NUM_ITEMS)
    sequences = [[f"I{i:03d}" for i in flat[a:b]] for a, b in itertools.pairwise(offsets)]
    rows = item_rows()
    prepared = write_prepared(root / "data", sequences, item_ids=[r["item_id"] for r in rows], items=rows)
    config = load_config(None, overrides=run_overrides(prepared, root / "cache"))
    result = run_pipeline(config, root / "run", progress=False)
    embed_dir = Path(result.stages["embed"]["path"])
    save_run_encoders(root / "run", embed_dir, Path(result.stages["tokenize"]["path"]))
    return root / "run", embed_dir, config


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: equal digests, byte-identical folders."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def new_items_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("item_id", pa.string()),
                ("title", pa.string()),
                ("brand", pa.string()),
                ("categories", pa.list_(pa.string())),
            ]
        ),
    )


def write_items(path: Path, rows: list[dict]) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(new_items_table(rows), path)
    return path


def like(i: int, item_id: str) -> dict:
    """A new item with the attributes of catalogue item i."""
    row = item_rows()[i]
    return {**row, "item_id": item_id, "title": f"new {row['title']}"}


NEW_ROWS = [
    like(5, "N1"),
    like(13, "N2"),
    {"item_id": "N3", "title": "a novelty", "brand": "Nobody", "categories": ["Beauty"]},
]
