"""The diffusion encoder: schedules, parameterizations, the deterministic sampler, and cold items' behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from genrec.data import load_prepared, write_cold_start
from genrec.embed.artifacts import EmbeddingError
from genrec.embed.diffusion import (
    Denoiser,
    GaussianDiffusion,
    alphas_cumprod,
    ddim_timesteps,
    generate_behaviour,
    train_diffusion,
)
from genrec.embed.encoder_config import DiffusionConfig
from genrec.embed.fusion_training import fuse
from genrec.embed.gather import gather_modalities
from tests.embed.multimodal_data import kind_of, small_config, synthetic_text


def tiny(**overrides) -> DiffusionConfig:
    settings = {
        "hidden": 32,
        "layers": 2,
        "steps": 300,
        "batch_size": 64,
        "warmup_steps": 20,
        "sample_steps": 20,
        "start": "noise",
        "guidance": 1.0,
    }
    return DiffusionConfig(**{**settings, **overrides}).validate()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_noise_schedules_run_from_signal_to_noise(schedule):
    ab = alphas_cumprod(schedule, 1000)
    assert ab.shape == (1000,) and torch.all(ab[1:] < ab[:-1])
    assert 0.99 < ab[0] < 1 and ab[-1] < 0.01
    seq = ddim_timesteps(1000, 50)
    assert (
        seq[0] == 999 and seq[-1] == 0 and len(seq) == 50 and all(a > b for a, b in itertools.pairwise(seq))
    )


@given(t=st.integers(0, 999), prediction=st.sampled_from(["eps", "x0", "v"]))
def test_each_parameterization_recovers_the_clean_sample_and_the_noise(t, prediction):
    diffusion = GaussianDiffusion("cosine", 1000, prediction)
    gen = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    tt = torch.full((4,), t)
    x_t = diffusion.noisy(x0, tt, noise)
    got_x0, got_eps = diffusion.split(diffusion.target(x0, tt, noise), x_t, tt, limit=None)
    tol = (
        1e-3 if prediction != "eps" or t < 990 else 5e-2
    )  # eps -> x0 divides by sqrt(alpha_bar) ~ 0 at the end
    assert torch.allclose(got_x0, x0, atol=tol) and torch.allclose(got_eps, noise, atol=tol)


def test_ddim_with_a_perfect_denoiser_returns_the_clean_sample_deterministically():
    target = torch.tensor([[0.5, -1.0, 2.0]])

    class Oracle(torch.nn.Module):  # predicts x0 = target whatever it is given
        def forward(self, x, t, cond, drop=None):
            return target.expand_as(x)

    diffusion = GaussianDiffusion("cosine", 100, "x0")
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    out = diffusion.ddim_sample(Oracle(), torch.zeros(5, 2), noise, steps=10)
    assert torch.allclose(out, target.expand(5, 3), atol=1e-5)
    assert torch.equal(out, diffusion.ddim_sample(Oracle(), torch.zeros(5, 2), noise, steps=10))


def test_denoiser_uses_its_condition_and_the_null_condition():
    torch.manual_seed(0)
    model = Denoiser(dim=4, cond_dim=3, hidden=16, layers=2)
    for p in model.parameters():  # leave the zero initialisation, so the output depends on the inputs
        torch.nn.init.normal_(p, std=0.3)
    x, t = torch.randn(2, 4), torch.tensor([10, 500])
    cond = torch.randn(2, 3)
    assert not torch.allclose(model(x, t, cond), model(x, t, cond + 1))
    dropped = model(x, t, cond, drop=torch.tensor([True, True]))
    assert torch.allclose(dropped, model(x, t, cond + 5, drop=torch.tensor([True, True])))


def _two_cluster_problem(n: int = 200, seed: int = 0):
    """Condition e_0 or e_1 -> a behaviour vector near centre a or b."""
    rng = np.random.default_rng(seed)
    a, b = np.eye(8)[0], np.eye(8)[1]
    which = rng.integers(0, 2, size=n)
    target = np.where(which[:, None] == 0, a, b) + 0.05 * rng.normal(size=(n, 8))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    cond = np.eye(2)[which] + 0.01 * rng.normal(size=(n, 2))
    return target.astype(np.float32), cond.astype(np.float32), which, a, b


def test_trained_model_generates_the_behaviour_its_condition_implies():
    target, cond, _, a, b = _two_cluster_problem()
    trained = train_diffusion(target, cond, tiny(), log=lambda m: None)
    out = trained.generate(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.array([0, 1]))
    assert out.shape == (2, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert out[0] @ a > 0.8 > out[0] @ b and out[1] @ b > 0.8 > out[1] @ a


def test_training_and_sampling_are_seeded_and_per_item():
    target, cond, *_ = _two_cluster_problem()
    config = tiny(steps=60)
    first = train_diffusion(target, cond, config, log=lambda m: None)
    second = train_diffusion(target, cond, config, log=lambda m: None)
    items = np.array([4, 9, 13])
    out = first.generate(cond[items], items)
    assert np.array_equal(out, second.generate(cond[items], items))
    # An item's sample depends on (seed, item), not on which items are generated with it.
    alone = first.generate(cond[[9]], np.array([9]))
    assert np.allclose(alone[0], out[1], atol=1e-6)
    other_seed = train_diffusion(target, cond, tiny(steps=60, seed=1), log=lambda m: None)
    assert not np.allclose(out, other_seed.generate(cond[items], items))


def test_sampling_starts_from_noise_zero_or_the_content_estimate():
    target, cond, _, a, b = _two_cluster_problem()
    trained = train_diffusion(target, cond, tiny(start="noise"), log=lambda m: None)
    items = np.array([0, 1])
    conds = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    trained.config = tiny(start="zero")
    zero = trained.generate(conds, items)
    trained.config = tiny(start="zero", seed=5)  # no noise drawn: the seed does not matter
    assert np.array_equal(zero, trained.generate(conds, items))
    assert zero[0] @ a > 0.8 and zero[1] @ b > 0.8
    trained.config = tiny(start="estimate", strength=0.3)
    with pytest.raises(EmbeddingError, match="estimate"):
        trained.generate(conds, items)
    refined = trained.generate(conds, items, estimate=np.stack([a, b]).astype(np.float32))
    assert refined[0] @ a > 0.8 and refined[1] @ b > 0.8


def test_cold_items_behaviour_lands_near_warm_items_of_their_kind(clustered_path, tmp_path):
    dataset = load_prepared(clustered_path)
    cold_data = load_prepared(write_cold_start(dataset, tmp_path / "cold", fraction=0.15, seed=0))
    config = small_config()
    mods = gather_modalities(cold_data, config, text=synthetic_text(60), log=lambda m: None)
    fusion = fuse(mods, config, log=lambda m: None)
    behaviour, info = generate_behaviour(
        fusion, tiny(steps=400, samples=2, start="estimate"), log=lambda m: None
    )
    cold = cold_data.cold_items()
    warm = np.flatnonzero(fusion.warm)
    assert info["generated_items"] == len(cold)
    assert np.array_equal(behaviour[warm], fusion.behaviour[warm])  # warm items keep their real behaviour
    assert not np.allclose(behaviour[cold], fusion.behaviour[cold])
    kinds = kind_of(60)
    nearest = warm[np.argsort(-(behaviour[cold] @ behaviour[warm].T), axis=1)[:, :5]]
    assert np.mean(kinds[nearest] == kinds[cold][:, None]) > 0.8  # chance is 1/3
    assert set(info["probe"]) >= {"cosine", "recall@10", "neighbours@10"}


def test_diffusion_needs_collaborative_signal(clustered_path):
    dataset = load_prepared(clustered_path)
    config = small_config(epochs=2, modalities=["text", "attributes"])
    fusion = fuse(gather_modalities(dataset, config, text=synthetic_text(60), log=lambda m: None), config)
    with pytest.raises(EmbeddingError, match="'collaborative'"):
        generate_behaviour(fusion, tiny(), log=lambda m: None)
    with pytest.raises(EmbeddingError, match="at least 2 warm items"):
        train_diffusion(np.zeros((1, 4), np.float32), np.zeros((1, 2), np.float32), tiny())
    with pytest.raises(ValueError, match=r"embed\.diffusion\.prediction"):
        DiffusionConfig(prediction="score").validate()
    with pytest.raises(ValueError, match=r"sample_steps"):
        DiffusionConfig(timesteps=10, sample_steps=20).validate()


def test_genrec_embed_diffusion_writes_embeddings(clustered_path, text_cache, tmp_path):
    from genrec.embed import EmbedConfig, embed_items

    cold_data = load_prepared(write_cold_start(clustered_path, tmp_path / "cold", fraction=0.15, seed=0))
    config = EmbedConfig(encoder="diffusion", cache_dir=str(text_cache), progress=False)
    config.multimodal = small_config(epochs=10)
    config.diffusion = tiny(steps=100)
    artifact = embed_items(cold_data, config, tmp_path / "emb")
    assert artifact.embeddings.shape == (60, 24) and np.isfinite(artifact.embeddings).all()
    meta = artifact.meta
    assert meta["encoder"] == "diffusion" and meta["diffusion"]["generated_items"] == len(
        cold_data.cold_items()
    )
    assert set(meta["fusion"]["probe"]) == {"content", "diffusion"}
    assert meta["diffusion_settings"]["steps"] == 100
