"""A trained model's per-item tables grow by the new items and load as the model built for the
larger catalogue: the old rows exactly kept, new free embeddings zero, new items marked untrained."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from genrec.catalogue import NewItemsError
from genrec.catalogue.model import extend_item_embeddings, extended_model, saved_content_dim
from genrec.config import load_config
from genrec.models import build_model
from genrec.train.checkpoint import save_model

SMALL = [
    "model.d_model=16",
    "model.decoder_layers=1",
    "model.num_heads=2",
    "model.head_dim=8",
    "model.d_ff=32",
    "train.max_history=4",
]
ITEM_DECODER = ["model.kind=item_decoder", "model.item_embeddings=true"]
LEVELS = [4, 4, 2]


def saved(tmp_path, overrides, num_items=10, **extra):
    config = load_config(None, overrides=[*SMALL, *overrides])
    torch.manual_seed(0)
    model = build_model(config.model, LEVELS, config.train.max_history, num_items, **extra)
    save_model(tmp_path / "model.safetensors", model)
    return config, model


@pytest.mark.parametrize(
    "overrides",
    [ITEM_DECODER, ["model.kind=tiger", "model.item_embeddings=true", "model.encoder_layers=1"]],
    ids=["item_decoder", "tiger"],
)
def test_free_item_embeddings_get_zero_rows(tmp_path, overrides):
    config, model = saved(tmp_path, overrides)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    content = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    grown, how = extended_model(config, LEVELS, tmp_path / "model.safetensors", 10, content)
    assert how == "zero item embeddings" and grown.num_items == 13
    for name, tensor in grown.state_dict().items():
        if name == "item_emb.weight":
            assert torch.equal(tensor[:10], before[name]) and not tensor[10:].any()
        else:
            assert torch.equal(tensor, before[name]), name


def test_a_model_without_item_tables_needs_nothing(tmp_path):
    config, _ = saved(tmp_path, ["model.kind=decoder_only"])
    _, how = extended_model(config, LEVELS, tmp_path / "model.safetensors", 10, np.zeros((2, 5), np.float32))
    assert how == "nothing to extend" and saved_content_dim(tmp_path / "model.safetensors") == 0


def test_extend_item_embeddings_leaves_other_models_alone():
    module = torch.nn.Linear(2, 2)
    extend_item_embeddings(module, 3)  # no item_emb: nothing happens
    assert not hasattr(module, "item_emb")


needs_content = pytest.mark.skipif(
    "content_dim" not in inspect.signature(build_model).parameters, reason="no content vectors in this genrec"
)


@needs_content
def test_content_vectors_take_the_new_items_content_and_mark_them_untrained(tmp_path):
    config, _ = saved(tmp_path, [*ITEM_DECODER, "model.content_vectors=true"], content_dim=5)
    content = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    grown, how = extended_model(config, LEVELS, tmp_path / "model.safetensors", 10, content)
    assert how == "content vectors" and saved_content_dim(tmp_path / "model.safetensors") == 5
    state = grown.state_dict()
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)
    np.testing.assert_allclose(state["item_content"][10:].numpy(), unit, atol=1e-6)
    assert state["item_trained"].tolist() == [True] * 10 + [False] * 3
    with pytest.raises(NewItemsError, match=r"content table is 5 wide, the new items' embeddings 4"):
        extended_model(config, LEVELS, tmp_path / "model.safetensors", 10, content[:, :4])
