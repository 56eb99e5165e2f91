"""`genrec tokenize` end to end on a tiny prepared dataset: the artifacts of docs/contracts.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from genrec.cli import app
from genrec.embed import write_embeddings
from genrec.embed.artifacts import item_ids_sha256
from genrec.files import array_sha256
from genrec.tokenize import load_semantic_ids, load_tokenizer, read_tokenizer_info
from tests.embed.helpers import make_prepared
from tests.tokenize.helpers import hierarchical_clusters

FAST = ["--levels", "2", "--codebook-size", "32", "--device", "cpu", "--no-progress"]
FAST_RQVAE = ["--epochs", "3", "--set", "rqvae.hidden_dims=[32]", "--set", "rqvae.latent_dim=8"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data = make_prepared(root, num_items=96)
    x, _, _ = hierarchical_clusters(8, 4, 3, 16, seed=2)
    emb = root / "emb"
    from genrec.data import load_prepared

    ids = load_prepared(data).item_table(columns=["item_id"]).column("item_id").to_pylist()
    write_embeddings(emb, x, {"encoder": "synthetic", "item_ids_sha256": item_ids_sha256(ids)})
    return data, emb, x


def run(*args):
    return CliRunner().invoke(app, ["tokenize", *map(str, args)])


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_writes_the_contract_artifacts(tmp_path, dataset, method):
    data, emb, x = dataset
    out = tmp_path / "tok"
    extra = FAST_RQVAE if method == "rqvae" else []
    result = run("--data", data, "--embeddings", emb, "--out", out, "--method", method, *FAST, *extra)
    assert result.exit_code == 0, result.output
    assert "collisions before disambiguation" in result.output and "level_sizes" in result.output

    ids = np.load(out / "semantic_ids.npy", allow_pickle=False)
    assert ids.dtype == np.int64 and ids.shape == (96, 3)
    assert len(np.unique(ids, axis=0)) == 96
    info = read_tokenizer_info(out)
    assert info["method"] == method and info["levels"] == 2 and info["codebook_size"] == 32
    assert info["level_sizes"][:2] == [32, 32] and info["level_sizes"][2] == ids[:, 2].max() + 1
    assert info["embeddings_sha256"] == array_sha256(x)
    assert info["semantic_ids_sha256"] == array_sha256(ids)
    assert info["config"]["method"] == method and info["dataset"]["num_items"] == 96
    np.testing.assert_array_equal(load_semantic_ids(out), ids)

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("levels", "collisions", "reconstruction", "disambiguation_level_size", "min_level_usage"):
        assert key in metrics
    assert {"usage", "perplexity", "codes_used"} <= set(metrics["levels"][0])
    assert {"collision_rate", "largest_collision_group"} <= set(metrics["collisions"])
    assert "mse" in metrics["reconstruction"]

    codebooks = load_file(str(out / "codebooks.safetensors"))
    assert codebooks["codebooks"].shape[:2] == (2, 32)
    assert (out / "rqvae.safetensors").exists() == (method == "rqvae")
    assert (out / "training.json").exists() == (method == "rqvae")

    tokenizer = load_tokenizer(out)
    np.testing.assert_array_equal(tokenizer.encode(x), ids[:, :2])
    if method == "rqvae":
        weights = load_file(str(out / "rqvae.safetensors"))
        torch.testing.assert_close(weights["quantizer.codebooks"], codebooks["codebooks"])


def test_same_seed_same_ids_through_the_cli(tmp_path, dataset):
    data, emb, _ = dataset
    args = ["--data", data, "--embeddings", emb, *FAST, *FAST_RQVAE]
    assert run(*args, "--out", tmp_path / "a").exit_code == 0
    assert run(*args, "--out", tmp_path / "b").exit_code == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "semantic_ids.npy"), np.load(tmp_path / "b" / "semantic_ids.npy")
    )


def test_bad_embeddings_fail_with_the_file_and_the_fault(tmp_path, dataset):
    data, _, x = dataset
    cases = {
        "count.npy": (x[:90], "90 rows of embeddings for 96 items"),
        "flat.npy": (x[:, 0], "must be 2-D"),
        "nan.npy": (np.where(np.arange(96)[:, None] == 7, np.nan, x).astype(np.float32), r"\(items 7\)"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        result = run(
            "--data",
            data,
            "--embeddings",
            tmp_path / name,
            "--out",
            tmp_path / "t",
            *FAST,
            "--method",
            "rqkmeans",
        )
        assert result.exit_code == 1, name
        assert name in result.output
        import re

        assert re.search(message, result.output), result.output
    assert not (tmp_path / "t" / "tokenizer.json").exists()


def test_embeddings_of_another_dataset_are_refused(tmp_path, dataset):
    data, _, x = dataset
    write_embeddings(tmp_path / "other", x, {"item_ids_sha256": item_ids_sha256([str(i) for i in range(96)])})
    result = run("--data", data, "--embeddings", tmp_path / "other", "--out", tmp_path / "t", *FAST)
    assert result.exit_code == 1 and "items differ" in result.output


def test_bad_settings_are_named(tmp_path, dataset):
    data, emb, _ = dataset
    base = ["--data", data, "--embeddings", emb, "--out", tmp_path / "t", *FAST]
    assert "unknown key 'tokenize.rqvae.epoch'; did you mean 'tokenize.rqvae.epochs'?" in " ".join(
        run(*base, "--set", "rqvae.epoch=3").output.split()
    )
    assert "tokenize.method = 'vq' is invalid: it must be one of" in run(*base, "--method", "vq").output
    assert "tokenize.rqvae.gradient" in run(*base, "--set", "rqvae.gradient=straight").output
    overflow = run(*base, "--levels", "1", "--codebook-size", "2", "--method", "rqkmeans")
    assert overflow.exit_code == 1 and "codebook_size=2" in overflow.output


def test_an_overflowing_cell_is_reported_and_its_items_moved(tmp_path, dataset):
    data, emb, _ = dataset
    out = tmp_path / "tok"
    # 96 clustered items on 2 x 5 codes: at most 5 per code pair, so crowded pairs must hand items on
    result = run("--data", data, "--embeddings", emb, "--out", out, "--method", "rqkmeans", "--levels", "2",
                 "--codebook-size", "5", "--device", "cpu", "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    overflow = json.loads((out / "metrics.json").read_text())["overflow"]
    assert overflow["moved_items"] > 0 and overflow["largest_cell_before"] > 5
    assert f"{overflow['moved_items']:,} items moved to their nearest free ID" in result.output
    ids = np.load(out / "semantic_ids.npy", allow_pickle=False)
    assert len(np.unique(ids, axis=0)) == 96 and ids[:, 2].max() < 5
