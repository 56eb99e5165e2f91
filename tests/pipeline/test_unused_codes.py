"""A tokenizer may leave a code of a level unused; decoding must still use the model's vocabulary."""

from __future__ import annotations

import numpy as np

from genrec.config import ModelConfig
from genrec.models import build_model
from genrec.recommend import Recommender


def test_recommender_decodes_when_a_level_leaves_codes_unused():
    config = ModelConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, num_heads=2, head_dim=8, d_ff=32, user_buckets=0
    )
    codes = np.array(
        [[0, 0, 0], [1, 2, 0], [2, 1, 0], [0, 1, 0]]
    )  # vocabulary 4 per level, code 3 never used
    model = build_model(config, [4, 4, 1], 5, len(codes)).eval()
    top = Recommender(model, codes, beam_size=4, device="cpu").recommend([np.array([0, 1])], 3, np.array([0]))
    assert top.shape == (1, 3) and set(top[0].tolist()) <= {0, 1, 2, 3}
