"""A tokenizer may leave a code of a level unused; decoding must still use the model's vocabulary."""

from __future__ import annotations

import numpy as np
import torch

from genrec.config import ModelConfig
from genrec.models import build_model
from genrec.serve.beam import BeamSearchRecommender
from tests.train.helpers import exhaustive_search


def test_recommender_decodes_when_a_level_leaves_codes_unused():
    config = ModelConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, head_dim=8, d_ff=32, user_buckets=0
    )
    codes = np.array([[0, 0, 0], [1, 2, 0], [2, 1, 0], [0, 1, 0]])  # vocabulary 4 per level, code 3 never used
    torch.manual_seed(0)
    model = build_model(config, [4, 4, 1], 5, len(codes)).eval()
    rec = BeamSearchRecommender(model, codes, beam_size=4, device="cpu")
    history = [np.array([0, 1])]
    items, scores = rec.topk(history, 4, np.array([0]))
    # A beam as wide as the catalogue ranks every item: the plain search over the model's full
    # vocabulary (tests/train/helpers.py) gives the same items in the same order, same scores.
    flat = torch.as_tensor(np.concatenate(history))
    batch = rec._batch(flat, np.array([0]), np.array([len(history[0])]), np.array([0]))
    want_items, want_scores = exhaustive_search(model.step_fn(batch, 4), torch.as_tensor(codes), 1, 4, 4)
    assert sorted(items[0].tolist()) == [0, 1, 2, 3]
    assert items.tolist() == want_items.tolist()
    np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-5, atol=1e-5)
    assert rec.recommend(history, 3, np.array([0])).tolist() == [items[0, :3].tolist()]
