"""tokenize(): cluster recovery by both methods, repeatability, and the fitted Tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.embed import EmbeddingError
from genrec.tokenize import TokenizeConfig, tokenize
from tests.tokenize.helpers import hierarchical_clusters, same_partition


def small_config(method: str, codebook_size: int = 8, **rqvae) -> TokenizeConfig:
    config = TokenizeConfig(
        method=method, levels=2, codebook_size=codebook_size, seed=0, device="cpu", progress=False
    )
    config.rqvae.hidden_dims = [64, 32]
    config.rqvae.latent_dim = 8
    config.rqvae.epochs = 40
    config.rqvae.batch_size = 64
    config.rqvae.restart_interval = 10
    for key, value in rqvae.items():
        setattr(config.rqvae, key, value)
    return config


@pytest.fixture(scope="module")
def clustered():
    """8 coarse clusters, each made of 8 fine ones of 6 points."""
    return hierarchical_clusters(8, 8, 6, 24, seed=11)


def test_rqkmeans_recovers_two_level_clusters(clustered):
    x, coarse, fine = clustered
    result = tokenize(x, small_config("rqkmeans"))
    assert same_partition(coarse, result.codes[:, 0])
    assert same_partition(np.stack([coarse, fine], 1), result.codes)
    check_result(result, len(x))


@pytest.mark.parametrize("gradient", ["rotation", "ste"])
@pytest.mark.parametrize("seed", [0, 1])
def test_rqvae_recovers_clusters(gradient, seed):
    x, clusters, _ = hierarchical_clusters(8, 1, 6, 24, seed=seed)
    config = small_config("rqvae", gradient=gradient, epochs=40, batch_size=8)
    config.seed = seed
    result = tokenize(x, config)
    assert same_partition(clusters, result.codes[:, 0])
    check_result(result, len(x), max_error=1.0)


def check_result(result, n: int, max_error: float = 0.5) -> None:
    ids = result.semantic_ids
    assert result.codes.shape == (n, 2) and result.codes.dtype == np.int64
    assert ids.shape == (n, 3) and ids.dtype == np.int64 and len(np.unique(ids, axis=0)) == n
    np.testing.assert_array_equal(ids[:, :2], result.codes)
    m = result.metrics
    assert m["levels"][0]["codes_used"] == 8
    assert m["min_level_usage"] == min(level["usage"] for level in m["levels"])
    assert m["disambiguation_level_size"] == ids[:, -1].max() + 1
    assert result.level_sizes == [8, 8, m["disambiguation_level_size"]]
    assert 0 <= m["reconstruction"]["relative_error"] < max_error


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
@pytest.mark.parametrize("gradient", ["rotation", "ste"])
def test_same_seed_same_ids(method, gradient, clustered):
    if method == "rqkmeans" and gradient == "ste":
        pytest.skip("rqkmeans trains no network")
    x = np.random.default_rng(5).normal(size=(300, 16)).astype(np.float32)  # no easy structure
    config = small_config(method, codebook_size=32, gradient=gradient, epochs=5)
    first, second = tokenize(x, config), tokenize(x, config)
    np.testing.assert_array_equal(first.semantic_ids, second.semantic_ids)
    torch.testing.assert_close(first.tokenizer.codebooks, second.tokenizer.codebooks, rtol=0, atol=0)
    config.seed = 1
    assert not np.array_equal(first.codes, tokenize(x, config).codes)


def test_tokenize_leaves_global_random_state_alone():
    x = np.random.default_rng(5).normal(size=(300, 16)).astype(np.float32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tokenize(x, small_config("rqvae", codebook_size=32, epochs=2))
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_tokenizer_encodes_new_items_like_training(method):
    x = np.random.default_rng(5).normal(size=(300, 24)).astype(np.float32)
    result = tokenize(x, small_config(method, codebook_size=32, epochs=5))
    np.testing.assert_array_equal(result.tokenizer.encode(x[:50]), result.codes[:50])
    np.testing.assert_array_equal(result.tokenizer.encode(torch.from_numpy(x[:5])), result.codes[:5])
    with pytest.raises(EmbeddingError, match="dimension 7, expected 24"):
        result.tokenizer.encode(x[:, :7])


@pytest.mark.parametrize("method", ["rqvae", "rqkmeans"])
def test_id_choices_start_with_the_items_codes_then_the_nearest_last_codewords(method):
    x = np.random.default_rng(5).normal(size=(300, 24)).astype(np.float32)
    tokenizer = tokenize(x, small_config(method, codebook_size=32, epochs=5)).tokenizer
    new = np.random.default_rng(7).normal(size=(40, 24)).astype(np.float32)
    choices = tokenizer.encode_choices(new, 32)
    codes = tokenizer.encode(new)
    assert choices.shape == (40, 32, 2)
    np.testing.assert_array_equal(choices[:, 0], codes)  # the item's own codes first
    assert (choices[:, :, 0] == codes[:, :1]).all()  # only the last level varies ...
    assert all(sorted(row) == list(range(32)) for row in choices[:, :, 1].tolist())  # ... over every codeword
    # Brute force: the last residual's distance to each codeword, in float64.
    z = tokenizer.normalizer(torch.from_numpy(new)).double()
    books = (
        tokenizer.model.quantizer.codebooks if tokenizer.model is not None else tokenizer.codebooks
    ).double()
    if tokenizer.model is not None:
        z = tokenizer.model.encoder(z.float()).double()
    residual = z - books[0, torch.from_numpy(codes[:, 0])]
    distance = torch.cdist(residual, books[1]).detach().numpy()
    chosen = np.take_along_axis(distance, choices[:, 1:, 1], axis=1)
    assert (np.diff(chosen, axis=1) >= -1e-5).all()  # the alternatives, nearest first
    np.testing.assert_array_equal(tokenizer.encode_choices(new, 3), choices[:, :3])
    assert tokenizer.encode_choices(new, 99).shape == (40, 32, 2)  # at most the codebook


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.full((10, 4), np.nan, dtype=np.float32), r"10 item\(s\) have NaN"),
        (np.zeros((10,), dtype=np.float32), "must be 2-D"),
        (np.zeros((10, 4, 2), dtype=np.float32), "must be 2-D"),
        (np.zeros((10, 4), dtype=np.int64), "floating point"),
        (np.zeros((0, 4), dtype=np.float32), "no items"),
    ],
)
def test_bad_embeddings_get_a_clear_error(bad, message):
    with pytest.raises(EmbeddingError, match=message):
        tokenize(bad, small_config("rqkmeans"))


def test_nan_rows_are_named():
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    x[3, 1] = np.nan
    x[17, 0] = np.inf
    with pytest.raises(EmbeddingError, match=r"2 item\(s\) have NaN or infinite embeddings \(items 3, 17\)"):
        tokenize(x, small_config("rqkmeans"))


def test_identical_items_get_the_nearest_free_ids():
    x = np.ones((20, 4), dtype=np.float32)  # 20 identical items, 8 disambiguation values
    result = tokenize(x, small_config("rqkmeans"))
    ids = result.semantic_ids
    assert len(np.unique(ids, axis=0)) == 20 and ids[:, -1].max() < 8
    assert result.metrics["overflow"]["largest_cell_before"] == 20
    assert result.metrics["overflow"]["moved_items"] == 12 == int((ids[:, :2] != result.codes).any(1).sum())


def test_a_catalogue_larger_than_the_code_space_is_refused():
    from genrec.tokenize import CodebookOverflowError

    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    config = small_config("rqkmeans", codebook_size=4)
    config.levels = 1  # 4 codes x 4 tokens: 16 IDs
    with pytest.raises(CodebookOverflowError, match=r"20 items, .* only 16 distinct semantic IDs"):
        tokenize(x, config)
