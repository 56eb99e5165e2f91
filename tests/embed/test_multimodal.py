"""The multimodal encoder: attribute and collaborative modalities, the trained fusion, the registered encoder."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from genrec.data import load_prepared, write_cold_start, write_prepared
from genrec.embed.artifacts import EmbeddingError
from genrec.embed.attributes import embed_attributes
from genrec.embed.behaviour_probe import behaviour_probe
from genrec.embed.collaborative import embed_collaborative
from genrec.embed.encoder_config import MultimodalConfig
from genrec.embed.fusion_training import fuse
from genrec.embed.gather import gather_modalities, text_modality
from genrec.embed.modality import ModalityFeatures
from tests.embed.multimodal_data import kind_of, small_config, synthetic_text


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _same_kind_share(query: np.ndarray, bank: np.ndarray, query_items, bank_items, k: int = 5) -> float:
    """Share of each query's k nearest bank rows (cosine) that are of the query item's kind."""
    kinds = kind_of(60)
    sims = _unit(query) @ _unit(bank).T
    hits = []
    for row, item in enumerate(query_items):
        order = [j for j in np.argsort(-sims[row]) if bank_items[j] != item][:k]
        hits += [kinds[bank_items[j]] == kinds[item] for j in order]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def clustered(clustered_path):
    return load_prepared(clustered_path)


@pytest.fixture(scope="module")
def clustered_cold(clustered, tmp_path_factory):
    return load_prepared(
        write_cold_start(clustered, tmp_path_factory.mktemp("mm") / "cold", fraction=0.15, seed=0)
    )


# ---- attributes ----
def test_attributes_weigh_shared_values_and_mark_items_without_any():
    table = pa.table(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "brand": ["Glow", "glow ", "Dermia", "Dermia", "Unique"],
            "categories": [
                ["Beauty", "Lips"],
                ["Beauty", "Lips"],
                ["Beauty", "Face"],
                ["Beauty", "Face"],
                ["Beauty"],
            ],
        }
    )
    feats = embed_attributes(table, dim=3, min_count=2, seed=0)
    # "beauty" is on every item (idf 0) and "unique" on one (below min_count): item e has nothing left.
    assert feats.present.tolist() == [True, True, True, True, False]
    assert feats.info["vocabulary"] == 4 and feats.dimension == 3
    v = _unit(feats.values[:4])
    assert v[0] @ v[1] == pytest.approx(1.0, abs=1e-6)  # case and spacing do not split a brand
    assert abs(v[0] @ v[2]) < 1e-6
    again = embed_attributes(table, dim=3, min_count=2, seed=0)
    assert np.array_equal(feats.values, again.values)
    with pytest.raises(EmbeddingError, match="'colour'"):
        embed_attributes(table, columns=["brand", "colour"])
    with pytest.raises(EmbeddingError, match="shared"):
        embed_attributes(table, columns=["brand"], min_count=3)


# ---- collaborative ----
def test_collaborative_embeddings_separate_behaviour(clustered):
    feats = embed_collaborative(clustered, dim=8, seed=0)
    assert feats.present.all() and feats.dimension == 8
    items = np.arange(60)
    assert _same_kind_share(feats.values, feats.values, items, items) > 0.9
    assert np.array_equal(feats.values, embed_collaborative(clustered, dim=8, seed=0).values)


def test_collaborative_embeddings_read_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    base = [rng.choice(10, size=6, replace=False).tolist() for _ in range(40)]
    # Same training parts, different held-out items (item 10 is only ever a test or validation target).
    a = load_prepared(write_prepared(tmp_path / "a", [[*s, 10, 10] for s in base], item_ids=range(11)))
    b = load_prepared(write_prepared(tmp_path / "b", [[*s, s[0], 10] for s in base], item_ids=range(11)))
    fa, fb = embed_collaborative(a, dim=4), embed_collaborative(b, dim=4)
    assert not fa.present[10] and not fb.present[10]
    assert np.array_equal(fa.values, fb.values)


# ---- the fusion ----
def _modalities(dataset, config):
    return gather_modalities(dataset, config, text=synthetic_text(dataset.num_items), log=lambda m: None)


def test_fusion_is_trained_seeded_and_repeatable(clustered):
    config = small_config()
    mods = _modalities(clustered, config)
    first, second = fuse(mods, config, log=lambda m: None), fuse(mods, config, log=lambda m: None)
    assert np.array_equal(first.embeddings(config), second.embeddings(config))
    other = fuse(mods, small_config(seed=1), log=lambda m: None)
    assert not np.allclose(first.embeddings(config), other.embeddings(config))
    assert first.info["epochs_run"] == config.epochs and first.info["final_loss"] < np.log(config.batch_size)
    emb = first.embeddings(config)
    assert emb.shape == (60, 16 + 8) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb[:, :16], axis=1), 1, atol=1e-5)  # unit content part
    assert np.allclose(np.linalg.norm(emb[:, 16:], axis=1), 1, atol=1e-5)  # unit behaviour part
    assert "recall@10" in first.info["probe"]["content"]


def test_epoch_items_samples_a_large_catalogue_and_leaves_a_small_one_alone(clustered, monkeypatch):
    config = small_config(epochs=5)
    mods = _modalities(clustered, config)
    whole = fuse(mods, config, log=lambda m: None)
    assert whole.info["epoch_items"] == whole.info["train_items"] == 54  # 60 warm items, 6 held out
    same = fuse(mods, small_config(epochs=5, epoch_items=54), log=lambda m: None)
    assert np.array_equal(whole.embeddings(config), same.embeddings(config))

    seen = []  # the items of every training batch
    original = torch.Tensor.__getitem__

    def spy(self, key):
        if isinstance(key, torch.Tensor) and key.dtype == torch.long and key.ndim == 1 and len(key) == 8:
            seen.append(key.tolist())
        return original(self, key)

    monkeypatch.setattr(torch.Tensor, "__getitem__", spy)
    sampled = fuse(mods, small_config(epochs=5, epoch_items=20, batch_size=8), log=lambda m: None)
    monkeypatch.undo()
    assert sampled.info["epoch_items"] == 20
    batches = [b for i, b in enumerate(seen) if i == 0 or b != seen[i - 1]]  # a batch indexes several tensors
    per_epoch = [sorted(batches[2 * e] + batches[2 * e + 1]) for e in range(5)]
    assert len(batches) == 5 * 2  # 20 items per epoch in batches of 8: 2 full batches
    assert all(len(set(e)) == 16 for e in per_epoch)
    assert len({tuple(e) for e in per_epoch}) == 5  # a fresh sample every epoch
    assert not {i for e in per_epoch for i in e} & set(sampled.probe.tolist())  # never the held-out items


def test_absent_modalities_are_masked_not_zero_filled(clustered):
    config = small_config(epochs=5)
    mods = _modalities(clustered, config)
    text = mods["text"]
    present = text.present.copy()
    present[7] = False  # item 7 has no text
    mods["text"] = ModalityFeatures("text", text.values, present)
    garbage = text.values.copy()
    garbage[7] = 123.0  # whatever sits in an absent row is never read
    masked = fuse(mods, config, log=lambda m: None).content
    mods["text"] = ModalityFeatures("text", garbage, present)
    assert np.array_equal(masked, fuse(mods, config, log=lambda m: None).content)
    zeros = text.values.copy()
    zeros[7] = 0.0
    mods["text"] = ModalityFeatures("text", zeros, np.ones(60, dtype=bool))  # zeros posing as text
    assert not np.allclose(masked[7], fuse(mods, config, log=lambda m: None).content[7])


def test_cold_items_get_a_behaviour_estimate_near_their_kind(clustered_cold):
    config = small_config()
    mods = _modalities(clustered_cold, config)
    cold = clustered_cold.cold_items()
    assert not mods["collaborative"].present[cold].any()  # no training interaction, no collaborative signal
    result = fuse(mods, config, log=lambda m: None)
    warm = np.flatnonzero(result.warm)
    assert result.info["estimated_items"] == len(cold)
    share = _same_kind_share(result.behaviour[cold], result.behaviour[warm], cold, warm)
    assert share > 0.8  # chance is 1/3


def test_modality_no_item_has_is_skipped_and_reported(clustered):
    config = small_config(epochs=2, modalities=["text", "image", "attributes", "collaborative"])
    mods = _modalities(clustered, config)  # the table's image_path column is all null
    assert mods["image"].present.sum() == 0
    notes = []
    result = fuse(mods, config, log=notes.append)
    assert result.info["skipped_modalities"] == ["image"] and any("'image'" in n for n in notes)


def test_without_collaborative_the_fusion_aligns_modality_views(clustered):
    config = small_config(epochs=5, modalities=["text", "attributes"])
    result = fuse(_modalities(clustered, config), config, log=lambda m: None)
    assert result.behaviour is None and result.embeddings(config).shape == (60, 16)
    assert result.info["objective"].startswith("infonce between")


def test_mismatched_item_counts_are_clear_errors(clustered):
    config = small_config()
    mods = _modalities(clustered, config)
    mods["attributes"] = ModalityFeatures("attributes", np.ones((59, 6), np.float32), np.ones(59, dtype=bool))
    with pytest.raises(EmbeddingError, match="disagree on the number of items"):
        fuse(mods, config, log=lambda m: None)
    with pytest.raises(EmbeddingError, match="row i must be item i"):
        text_modality(clustered, np.zeros((59, 4), np.float32))
    with pytest.raises(EmbeddingError, match="row i must be item i"):
        gather_modalities(clustered, config, text=synthetic_text(59), log=lambda m: None)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"embed\.multimodal\.modalities"):
        MultimodalConfig(modalities=["text", "smell"]).validate()
    with pytest.raises(ValueError, match="content modality"):
        MultimodalConfig(modalities=["collaborative"]).validate()
    with pytest.raises(ValueError, match=r"did you mean 'embed\.multimodal\.epochs'"):
        MultimodalConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"embed\.multimodal\.attributes\.dim must be int"):
        MultimodalConfig.from_dict({"attributes": {"dim": "wide"}})
    assert MultimodalConfig.from_dict({"collaborative": {"window": 5}}).collaborative.window == 5


def test_behaviour_probe_scores_a_perfect_and_a_useless_estimate():
    rng = np.random.default_rng(0)
    behaviour = _unit(rng.normal(size=(50, 6))).astype(np.float32)
    warm = np.ones(50, dtype=bool)
    probe = np.arange(0, 50, 5)
    perfect = behaviour_probe(behaviour[probe], probe, behaviour, warm)
    assert (
        perfect["recall@10"] == 1.0
        and perfect["cosine"] == pytest.approx(1.0)
        and perfect["neighbours@10"] == 1.0
    )
    useless = behaviour_probe(-behaviour[probe], probe, behaviour, warm)
    assert useless["recall@10"] == 0.0


# ---- the registered encoder, end to end (the real text encoder on a tiny catalogue) ----
def test_genrec_embed_multimodal_writes_embeddings(clustered, text_cache, tmp_path):
    from genrec.embed import EmbedConfig, embed_items, read_meta

    settings = small_config(epochs=10)
    config = EmbedConfig(encoder="multimodal", cache_dir=str(text_cache), progress=False)
    config.multimodal = settings
    artifact = embed_items(clustered, config, tmp_path / "emb")
    assert artifact.embeddings.shape == (60, 16 + 8)
    meta = read_meta(tmp_path / "emb")
    assert meta["encoder"] == "multimodal" and meta["modalities"]["text"]["items_with"] == 60
    assert meta["fusion"]["content_modalities"] == ["text", "attributes"]
    assert meta["layout"]["columns"] == {"content": [0, 16], "behaviour": [16, 24]}
    json.dumps(meta)  # plain JSON all the way down
    again = embed_items(clustered, config, tmp_path / "emb")
    assert again.reused == "output" and np.array_equal(again.embeddings, artifact.embeddings)
    settings.epochs = 11  # a setting that changes the result changes the cache key
    assert embed_items(clustered, config, tmp_path / "emb").reused is None


def test_genrec_embed_reads_a_run_config_then_set_then_flags(clustered_path, tmp_path):
    from typer.testing import CliRunner

    from genrec.cli import app
    from genrec.embed import read_meta

    config = tmp_path / "run.toml"
    config.write_text(
        '[embed]\nencoder = "multimodal"\nbatch_size = 7\n'
        '[embed.multimodal]\nmodalities = ["attributes", "collaborative"]\ndim = 16\nhidden = 32\n'
        "epochs = 40\nbatch_size = 32\npatience = 0\n"
        "[profile.quick.embed.multimodal]\nepochs = 3\n"
    )
    base = ["embed", "--data", str(clustered_path), "--no-progress", "--config", str(config)]
    run = CliRunner().invoke(
        app,
        [
            *base,
            "--profile",
            "quick",
            "--set",
            "multimodal.dim=12",
            "--set",
            "embed.encoder=text",
            "--encoder",
            "multimodal",
            "--out",
            str(tmp_path / "emb"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert run.exit_code == 0, run.output
    meta = read_meta(tmp_path / "emb")
    settings = meta["multimodal_settings"]
    assert meta["encoder"] == "multimodal"  # the typed option over --set (which says text)
    assert settings["modalities"] == ["attributes", "collaborative"] and settings["hidden"] == 32
    assert settings["epochs"] == 3  # the profile over the file
    assert settings["dim"] == 12  # --set over the file

    bad = CliRunner().invoke(app, [*base, "--set", "multimodal.dims=12", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "embed.multimodal.dims" in bad.output
    lonely = CliRunner().invoke(
        app, ["embed", "--data", str(clustered_path), "--profile", "cpu", "--out", str(tmp_path / "y")]
    )
    assert lonely.exit_code == 1 and "--profile needs --config" in lonely.output
