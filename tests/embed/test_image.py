"""The image encoder on real photographs shipped by scikit-image: EfficientNet-Lite0 with ImageNet weights."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genrec.embed.artifacts import EmbeddingError
from genrec.embed.image import (
    EMBEDDING_DIM,
    EfficientNetLite0,
    ImageEncoder,
    ImageReadError,
    embed_item_images,
    item_image_paths,
    preprocess,
)

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = Path(skimage_data.__file__).parent  # real photographs, installed with scikit-image
COFFEE, CAT, ROCKET = PHOTOS / "coffee.png", PHOTOS / "chelsea.png", PHOTOS / "rocket.jpg"
# ImageNet-1k classes: espresso, cup, coffee mug / tabby, tiger cat, Egyptian cat
COFFEE_CLASSES, CAT_CLASSES = {967, 968, 504}, {281, 282, 285}


@pytest.fixture(scope="module")
def encoder():
    return ImageEncoder(batch_size=2)


@pytest.fixture(scope="module")
def photo_features(encoder):
    return encoder.embed_files([COFFEE, CAT, ROCKET])


def test_embeddings_are_deterministic_and_of_the_stated_dimension(encoder, photo_features):
    assert photo_features.shape == (3, EMBEDDING_DIM) == (3, encoder.dimension)
    assert photo_features.dtype == np.float32 and np.isfinite(photo_features).all()
    assert np.array_equal(photo_features, encoder.embed_files([COFFEE, CAT, ROCKET]))
    assert np.allclose(photo_features[1:2], ImageEncoder().embed_files([CAT]), atol=1e-5)  # batch-independent
    unit = photo_features / np.linalg.norm(photo_features, axis=1, keepdims=True)
    assert (unit @ unit.T)[np.triu_indices(3, 1)].max() < 0.9  # different photographs, different vectors


def test_classifier_head_recognises_the_photographs(encoder, photo_features):
    coffee, cat, _ = encoder.classify(photo_features, top_k=5)
    assert coffee[0].index in COFFEE_CLASSES and coffee[0].probability > 0.5
    assert cat[0].index in CAT_CLASSES and sum(p.index in CAT_CLASSES for p in cat[:3]) >= 2
    assert coffee[0].name == "espresso"
    assert all(a.probability >= b.probability for a, b in itertools.pairwise(coffee))


def test_architecture_matches_the_packaged_weights(encoder):
    model = encoder.model  # loaded with strict=True: every tensor of the package's state dict has its place
    assert isinstance(model, EfficientNetLite0)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)  # Lite0: 4.65M
    import torch

    with torch.no_grad():  # TF "SAME" padding: any input size, 1280 features out
        assert model.features(torch.zeros(1, 3, 225, 199)).shape == (1, EMBEDDING_DIM)
    array = np.asarray(np.random.default_rng(0).integers(0, 256, (50, 80, 3)), dtype=np.uint8)
    x = preprocess(array)
    assert x.shape == (3, 224, 224) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_item_images_from_a_path_column_and_from_a_folder(encoder, photo_features, tmp_path):
    table = pa.table({"item_id": ["cup", "cat", "plain"], "image_path": ["coffee.png", str(CAT), None]})
    paths = item_image_paths(table, root=PHOTOS)
    assert paths == [COFFEE, CAT, None]
    feats = embed_item_images(paths, ["cup", "cat", "plain"], encoder=encoder)
    assert feats.present.tolist() == [True, True, False]  # no image: absent, not a black picture
    assert np.allclose(feats.values[:2], photo_features[:2], atol=1e-5)
    assert feats.info["with_image"] == 2 and feats.info["without_image"] == 1

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.png").write_bytes(CAT.read_bytes())
    assert item_image_paths(table, directory=folder) == [None, folder / "cat.png", None]


def test_missing_column_and_unreadable_images_are_clear_errors(encoder, tmp_path):
    table = pa.table({"item_id": ["a"], "title": ["x"]})
    with pytest.raises(EmbeddingError, match="no column 'image_path'"):
        item_image_paths(table, where="items.parquet")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture at all")
    with pytest.raises(ImageReadError, match=r"broken\.png.*item b"):
        embed_item_images([COFFEE, broken], ["a", "b"], encoder=encoder)
    with pytest.raises(ImageReadError, match="not found"):
        embed_item_images([tmp_path / "gone.jpg"], ["c"], encoder=encoder)
    feats = embed_item_images([COFFEE, broken], ["a", "b"], encoder=encoder, on_unreadable="missing")
    assert feats.present.tolist() == [True, False] and feats.info["unreadable"] == 1
    with pytest.raises(EmbeddingError, match="2 image paths for 1 items"):
        embed_item_images([COFFEE, CAT], ["a"], encoder=encoder)
