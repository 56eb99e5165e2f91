"""A tiny prepared dataset on disk and a fast stand-in item encoder, for whole-pipeline tests."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from genrec.embed.registry import ItemEncoder, register_encoder
from tests.one_thread import one_thread  # noqa: F401  (tiny models: one CPU thread)
from tests.train.helpers import synthetic_world, tiny_settings


class CycleEncoder(ItemEncoder):
    """Embeds item i as a point on a circle (neighbours in the cycle are near): quick and deterministic."""

    name = "test_cycle"

    def describe(self) -> dict:
        return {"model": "test_cycle"}

    def fingerprint(self, dataset) -> str:
        return hashlib.sha256(f"cycle{dataset.num_items}{dataset.fingerprint}".encode()).hexdigest()

    def encode(self, dataset) -> np.ndarray:
        i = np.arange(dataset.num_items)
        angle = 2 * np.pi * i / dataset.num_items
        rng = np.random.default_rng(0)
        return np.stack([np.cos(angle), np.sin(angle), *(0.01 * rng.standard_normal((6, len(i))))], 1).astype(
            np.float32
        )


register_encoder("test_cycle", CycleEncoder)


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """60 users walking a cycle of 24 items, written as a prepared dataset."""
    from genrec.data import build_item_table, write_prepared_arrays

    offsets, flat, _, _ = synthetic_world(num_users=60, num_items=24)
    lengths = np.diff(offsets)
    users = np.repeat(np.arange(len(lengths)), lengths)
    item_ids = [f"I{i:03d}" for i in range(24)]
    table, text_columns = build_item_table(
        item_ids, {"item_id": item_ids, "title": [f"item {i}" for i in range(24)]}
    )
    out = tmp_path_factory.mktemp("data") / "cycle"
    write_prepared_arrays(
        out,
        user_idx=users,
        item_idx=flat,
        timestamps=np.arange(len(flat)),
        user_ids=[f"U{u}" for u in range(len(lengths))],
        item_table=table,
        name="cycle",
        source_format="test",
        item_text_columns=text_columns,
    )
    return out


def tiny_overrides(prepared, cache, *extra: str) -> list[str]:
    """The tiny pipeline's --set overrides, then ``extra``; the tiny model's settings are those of
    the last ``model.kind=`` in ``extra`` (tiger without one), so no setting goes unread."""
    kinds = [e.split("=", 1)[1] for e in extra if e.startswith("model.kind=")]
    return [
        *_tiny_pipeline(prepared, cache, kinds[-1] if kinds else "tiger"),
        *extra,
    ]


def _tiny_pipeline(prepared, cache, kind: str) -> list[str]:
    return [
        f"data.prepared={prepared}",
        f"run.cache_dir={cache}",
        "run.threads=1",
        "embed.encoder=test_cycle",
        "tokenize.method=rqkmeans",
        "tokenize.levels=2",
        "tokenize.codebook_size=4",
        "tokenize.kmeans_backend=torch",
        "tokenize.progress=false",
        *tiny_settings(kind),
        "train.lr=0.005",
        "train.epochs=24",  # enough to learn the cycle (NDCG@10 ~0.97); 12 left the top item to luck
        "eval.ks=[5, 10]",
    ]
