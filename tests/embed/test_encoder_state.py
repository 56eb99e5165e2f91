"""What encoders keep to embed items added later (genrec.embed.state): a new item with the content
of a catalogue item is embedded exactly as that item was, the state travels with its embeddings
through the cache, and a damaged or mismatched state is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genrec.data import load_prepared, write_cold_start
from genrec.embed import EmbedConfig, embed_items
from genrec.embed.attributes import fit_attributes
from genrec.embed.encoder_config import DiffusionConfig
from genrec.embed.state import (
    STATE_FILE,
    TENSORS_FILE,
    EncoderStateError,
    embed_new_items,
    new_item_columns,
    read_encoder_state,
)
from tests.embed.multimodal_data import small_config


@pytest.fixture(scope="module")
def cold_data(clustered_path, tmp_path_factory):
    """The clustered catalogue with a seeded 15 % of its items cold (no training interactions)."""
    return load_prepared(
        write_cold_start(clustered_path, tmp_path_factory.mktemp("state") / "cold", fraction=0.15, seed=0)
    )


def embed(data, encoder: str, folder, cache, modalities=("attributes", "collaborative")):
    config = EmbedConfig(encoder=encoder, cache_dir=str(cache), progress=False)
    config.multimodal = small_config(epochs=10, modalities=list(modalities))
    config.diffusion = DiffusionConfig(
        hidden=32, layers=1, steps=100, timesteps=100, sample_steps=10, samples=2
    )
    return embed_items(data, config, folder)


def reembed(folder, artifact, data, items):
    info, tensors = read_encoder_state(folder, artifact.meta["embeddings_sha256"])
    return embed_new_items(info, tensors, data.item_table().take(items), items, where="items", device="cpu")


@pytest.mark.parametrize("encoder", ["multimodal", "diffusion"])
def test_a_new_item_is_embedded_as_the_catalogue_item_with_its_content(cold_data, tmp_path, encoder):
    artifact = embed(cold_data, encoder, tmp_path / "emb", tmp_path / "cache")
    cold = cold_data.cold_items()
    assert len(cold) >= 3
    # Cold items have no behaviour of their own: content, the estimate or the sample seeded by the
    # item's index, all of which the saved state reproduces.
    np.testing.assert_allclose(
        reembed(tmp_path / "emb", artifact, cold_data, cold), artifact.embeddings[cold], atol=1e-6
    )
    warm = np.setdiff1d(np.arange(cold_data.num_items), cold)[:6]
    lo, hi = artifact.meta["layout"]["columns"]["content"]
    got = reembed(tmp_path / "emb", artifact, cold_data, warm)
    np.testing.assert_allclose(got[:, lo:hi], artifact.embeddings[warm, lo:hi], atol=1e-6)
    info, _ = read_encoder_state(tmp_path / "emb")
    assert new_item_columns(info) == {"brand": "attribute", "categories": "attribute"}


def test_the_text_modality_and_the_text_encoder_embed_new_items_with_the_same_model(
    cold_data, text_cache, tmp_path
):
    """The real MiniLM, through the multimodal encoder's text modality and through the text encoder."""
    artifact = embed(
        cold_data, "multimodal", tmp_path / "mm", text_cache, ("text", "attributes", "collaborative")
    )
    cold = cold_data.cold_items()
    np.testing.assert_allclose(
        reembed(tmp_path / "mm", artifact, cold_data, cold), artifact.embeddings[cold], atol=1e-5
    )
    info, _ = read_encoder_state(tmp_path / "mm")
    assert new_item_columns(info) == {
        "title": "text",
        "brand": "attribute",
        "categories": "attribute",
    }
    text = embed_items(cold_data, EmbedConfig(cache_dir=str(text_cache), progress=False), tmp_path / "text")
    rows = np.arange(cold_data.num_items)[::7]
    np.testing.assert_allclose(
        reembed(tmp_path / "text", text, cold_data, rows), text.embeddings[rows], atol=1e-5
    )
    from genrec.embed.text import TextEncoder

    info, _ = read_encoder_state(tmp_path / "text")
    assert TextEncoder.state_from_meta(text.meta) == info["spec"]  # an older embed.json says the same


def test_the_attribute_model_folds_new_rows_into_the_fitted_factorization():
    table = pa.table(
        {
            "item_id": [str(i) for i in range(8)],
            "brand": ["A", "A", "B", "B", "C", "C", None, "A"],
            "categories": [["x", "y"], ["x"], ["y"], ["y", "z"], ["z"], ["x", "z"], ["y"], []],
        }
    )
    feats, model = fit_attributes(table, dim=3, min_count=2)
    again = model.transform(table)
    np.testing.assert_allclose(again.values, feats.values, atol=1e-6)
    np.testing.assert_array_equal(again.present, feats.present)
    new = pa.table(
        {"item_id": ["n1", "n2"], "brand": ["a ", "Nobody"], "categories": [["X", "unknown"], None]}
    )
    out = model.transform(new)
    # Case and spaces fold as in training, unknown values are ignored: "a ", ["X"] is item 1's bag.
    np.testing.assert_allclose(out.values[0], feats.values[1], atol=1e-6)
    assert out.present.tolist() == [True, False]


def test_the_state_travels_with_its_embeddings_and_damage_is_refused(cold_data, tmp_path):
    first = embed(cold_data, "multimodal", tmp_path / "a", tmp_path / "cache")
    assert first.reused is None
    recorded = first.meta
    again = embed(cold_data, "multimodal", tmp_path / "b", tmp_path / "cache")
    assert again.reused == "cache" and (tmp_path / "b" / STATE_FILE).is_file()
    assert read_encoder_state(tmp_path / "b", recorded["embeddings_sha256"])[0]["encoder"] == "multimodal"
    with pytest.raises(EncoderStateError, match=r"saved with other embeddings"):
        read_encoder_state(tmp_path / "b", "0" * 64)
    tensors = tmp_path / "b" / TENSORS_FILE
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 1
    tensors.write_bytes(bytes(data))
    with pytest.raises(EncoderStateError, match=r"encoder_state\.safetensors is damaged"):
        read_encoder_state(tmp_path / "b")
    # An encoder with no state, written over a folder that held one, leaves none behind.
    import tests.pipeline.conftest  # noqa: F401  (registers the test_cycle encoder)

    embed_items(cold_data, EmbedConfig(encoder="test_cycle", cache=False, progress=False), tmp_path / "a")
    assert not (tmp_path / "a" / STATE_FILE).exists() and not (tmp_path / "a" / TENSORS_FILE).exists()


def test_embeddings_made_before_states_existed_get_one(cold_data, text_cache, tmp_path):
    """A fitted encoder's old output (no state) is computed again; the text encoder's state is its
    settings, so its old output is reused and the state written beside it."""
    from genrec.embed.state import clear_encoder_state

    first = embed(cold_data, "multimodal", tmp_path / "mm", tmp_path / "cache")
    clear_encoder_state(tmp_path / "mm")
    clear_encoder_state(first.meta.get("reused_from") or tmp_path / "cache" / first.meta["cache_key"][:32])
    again = embed(cold_data, "multimodal", tmp_path / "mm", tmp_path / "cache")
    assert again.reused is None and (tmp_path / "mm" / STATE_FILE).is_file()
    np.testing.assert_array_equal(again.embeddings, first.embeddings)  # the same, now with its state

    config = EmbedConfig(cache_dir=str(text_cache), progress=False)
    text = embed_items(cold_data, config, tmp_path / "text")
    clear_encoder_state(tmp_path / "text")
    again = embed_items(cold_data, config, tmp_path / "text")
    assert again.reused == "output"
    info, _ = read_encoder_state(tmp_path / "text", text.meta["embeddings_sha256"])
    assert info["encoder"] == "text"


def test_new_items_images_are_read_from_their_own_folder(tmp_path):
    """The image modality: a new item's relative image path starts at the folder given as root (the
    new items file's folder), as the catalogue's started at the dataset's folder."""
    skimage_data = pytest.importorskip("skimage.data")
    import shutil

    from tests.embed.multimodal_data import KINDS, clustered_dataset, kind_of

    photos = [Path(skimage_data.__file__).parent / n for n in ("coffee.png", "chelsea.png", "rocket.jpg")]
    rows = [
        {
            "item_id": i,
            "title": f"{KINDS[k][0]} {i}",
            "brand": KINDS[k][1][i % 2],
            "categories": KINDS[k][2],
            "image_path": None if i % 5 == 0 else f"img/{photos[k].name}",
        }
        for i, k in enumerate(kind_of(30))
    ]
    source = clustered_dataset(tmp_path / "c", num_items=30, num_users=120, items=rows)
    data = load_prepared(write_cold_start(source, tmp_path / "cold", fraction=0.2))
    (data.path / "img").mkdir()
    for p in photos:
        shutil.copyfile(p, data.path / "img" / p.name)
    config = EmbedConfig(encoder="multimodal", cache_dir=str(tmp_path / "cache"), progress=False)
    config.multimodal = small_config(epochs=5, modalities=["image", "attributes", "collaborative"])
    artifact = embed_items(data, config, tmp_path / "emb")
    info, tensors = read_encoder_state(tmp_path / "emb")
    assert new_item_columns(info) == {"brand": "attribute", "categories": "attribute", "image_path": "path"}
    cold = data.cold_items()
    table = data.item_table().take(cold)
    got = embed_new_items(info, tensors, table, cold, where="new.parquet", root=data.path, device="cpu")
    np.testing.assert_allclose(got, artifact.embeddings[cold], atol=1e-5)
    from genrec.embed.image import ImageReadError

    with pytest.raises(
        ImageReadError, match=r"elsewhere/img/\w+\.(png|jpg): image file not found \(item \d+\)"
    ):
        embed_new_items(
            info, tensors, table, cold, where="new.parquet", root=tmp_path / "elsewhere", device="cpu"
        )
