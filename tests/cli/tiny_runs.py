"""Tiny trained runs for the batch-inference and sharded-evaluation tests, with the lists and
scores their test stage computed (recorded on the way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import genrec.eval
import genrec.pipeline.test_stage
from genrec.config import load_config
from genrec.pipeline import run_pipeline
from tests.pipeline.conftest import tiny_overrides

# The default recipe's model: item head, co-occurrence fusion tuned on validation, history excluded.
ITEM_DECODER = [
    "model.kind=item_decoder",
    "model.item_embeddings=true",
    "model.item_loss=1.0",
    "model.rerank_weight=4.0",
    "model.exclude_seen=true",
    "model.tune_fusion=true",
    "model.fusion_candidates=4",
]
BATCH = 16  # eval.batch_users of the tiny runs: 60 users are 4 batches (16, 16, 16, 12)


def train_tiny_run(root: Path, prepared: Path, model: list[str]):
    """(run folder, {user_idx: (items, scores)} as the test stage's recommender returned them)."""
    overrides = tiny_overrides(prepared, root / "cache", *model)
    overrides += ["train.epochs=2", f"eval.batch_users={BATCH}"]
    captured: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    real = genrec.eval.evaluate

    def spy(recommender, dataset, split="test", *args, **kwargs):
        if split != "test" or not hasattr(recommender, "topk"):  # not the replays of components
            return real(recommender, dataset, split, *args, **kwargs)
        inner = recommender.topk

        def topk(histories, k, users=None):
            items, scores = inner(histories, k, users)
            for u, i, s in zip(users, items, scores, strict=True):
                captured[int(u)] = (i.copy(), s.copy())
            return items, scores

        recommender.topk = topk
        try:
            return real(recommender, dataset, split, *args, **kwargs)
        finally:
            del recommender.topk

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(genrec.pipeline.test_stage, "evaluate", spy)  # where the test stage calls it
        run_pipeline(load_config(None, overrides=overrides), root / "run", progress=False)
    return root / "run", captured
