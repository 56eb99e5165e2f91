"""embed_items with a stand-in encoder: caching, reuse, checks, and the encoder registry."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from genrec.data import load_prepared
from genrec.embed import (
    EmbedConfig,
    EmbeddingError,
    ItemEncoder,
    embed_items,
    encoder_names,
    get_encoder,
    register_encoder,
)
from genrec.embed.text import item_texts
from tests.embed.helpers import make_prepared


class HashEncoder(ItemEncoder):
    """Deterministic vectors from each item's text; counts its calls; can be told to misbehave."""

    name = "hash-test"
    calls = 0
    rows_delta = 0
    poison = False

    def describe(self) -> dict:
        return {"model": "hash", "template": self.config.template}

    def fingerprint(self, dataset) -> str:
        texts = item_texts(dataset, self.config.template)
        return hashlib.sha256("\0".join(texts).encode()).hexdigest()

    def encode(self, dataset) -> np.ndarray:
        type(self).calls += 1
        texts = item_texts(dataset, self.config.template)
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        out = np.stack([np.random.default_rng(s).normal(size=6) for s in seeds]).astype(np.float32)
        out = out[: len(out) + type(self).rows_delta] if type(self).rows_delta < 0 else out
        if type(self).poison:
            out[3, 2] = np.nan
        return out


@pytest.fixture(autouse=True)
def hash_encoder():
    register_encoder("hash-test", HashEncoder)
    HashEncoder.calls, HashEncoder.rows_delta, HashEncoder.poison = 0, 0, False
    yield
    HashEncoder.rows_delta, HashEncoder.poison = 0, False


def config(tmp_path, **kw) -> EmbedConfig:
    return EmbedConfig(encoder="hash-test", cache_dir=str(tmp_path / "cache"), progress=False, **kw)


def test_writes_rows_in_item_order_and_metadata(tmp_path):
    data = make_prepared(tmp_path)
    artifact = embed_items(data, config(tmp_path), tmp_path / "emb")
    dataset = load_prepared(data)
    assert artifact.embeddings.shape == (dataset.num_items, 6) and artifact.reused is None
    texts = item_texts(dataset, EmbedConfig().template)
    row5 = np.random.default_rng(int(hashlib.sha256(texts[5].encode()).hexdigest()[:8], 16)).normal(size=6)
    np.testing.assert_allclose(artifact.embeddings[5], row5.astype(np.float32))
    meta = artifact.meta
    assert (
        meta["encoder"] == "hash-test" and meta["num_items"] == dataset.num_items and meta["dimension"] == 6
    )
    assert meta["dataset_manifest_sha256"] == dataset.fingerprint
    assert np.load(tmp_path / "emb" / "embeddings.npy").dtype == np.float32


def test_reuses_output_then_cache_and_recomputes_on_change(tmp_path):
    data = make_prepared(tmp_path)
    first = embed_items(data, config(tmp_path), tmp_path / "a")
    assert HashEncoder.calls == 1
    again = embed_items(data, config(tmp_path), tmp_path / "a")
    assert again.reused == "output" and HashEncoder.calls == 1
    elsewhere = embed_items(data, config(tmp_path), tmp_path / "b")
    assert elsewhere.reused == "cache" and HashEncoder.calls == 1
    np.testing.assert_array_equal(elsewhere.embeddings, first.embeddings)
    changed = embed_items(data, config(tmp_path, template="{title}"), tmp_path / "a")
    assert changed.reused is None and HashEncoder.calls == 2
    assert changed.meta["cache_key"] != first.meta["cache_key"]
    embed_items(data, config(tmp_path, cache=False), tmp_path / "a")
    assert HashEncoder.calls == 3


def test_a_damaged_output_is_recomputed(tmp_path):
    data = make_prepared(tmp_path)
    embed_items(data, config(tmp_path, cache=False), tmp_path / "a")
    np.save(tmp_path / "a" / "embeddings.npy", np.zeros((2, 6), dtype=np.float32))
    repaired = embed_items(data, config(tmp_path, cache=False), tmp_path / "a")
    assert repaired.reused is None and repaired.embeddings.shape[0] == 24


def test_encoder_output_is_checked(tmp_path):
    data = make_prepared(tmp_path)
    HashEncoder.rows_delta = -1
    with pytest.raises(EmbeddingError, match="23 rows of embeddings for 24 items"):
        embed_items(data, config(tmp_path), tmp_path / "emb")
    HashEncoder.rows_delta, HashEncoder.poison = 0, True
    with pytest.raises(EmbeddingError, match=r"1 item\(s\) have NaN or infinite embeddings \(items 3\)"):
        embed_items(data, config(tmp_path), tmp_path / "emb")
    assert not (tmp_path / "emb" / "embed.json").exists()


def test_registry():
    assert {"text", "hash-test"} <= set(encoder_names())
    assert get_encoder("hash-test") is HashEncoder
    with pytest.raises(ValueError, match="unknown encoder 'clip'; choose one of"):
        get_encoder("clip")
    with pytest.raises(ValueError, match="simple word"):
        register_encoder("a b", HashEncoder)
