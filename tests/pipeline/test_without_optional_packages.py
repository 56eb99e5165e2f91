"""The GPU machine has no polars, faiss, sentence-transformers or tensorboard: `genrec train` must run
there from artifacts prepared elsewhere (a prepared folder and a stage cache carried over)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.pipeline import run_pipeline
from tests.pipeline.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"polars", "faiss", "sentence_transformers", "tensorboard", "transformers"}:
            raise ImportError(f"{name} is not installed here (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
import tests.pipeline.conftest  # registers the test encoder (its cached output is all that is read)
from genrec.cli import app
app(sys.argv[1:])
"""


# The encoder-decoder, and the default recipe's model: ItemDecoder with the item head re-ranking.
ITEM_DECODER = [
    "model.kind=item_decoder",
    "model.item_embeddings=true",
    "model.item_loss=1.0",
    "model.rerank_weight=4.0",
    "model.exclude_seen=true",
    "model.tune_fusion=true",  # co-occurrence statistics and tuning need neither polars nor faiss
    "model.fusion_candidates=4",
]


@pytest.mark.parametrize("model", [[], ITEM_DECODER], ids=["tiger", "item_decoder"])
def test_train_runs_from_carried_artifacts_without_optional_packages(tmp_path, tiny_prepared, model):
    cache = tmp_path / "carry" / "cache"
    overrides = tiny_overrides(tiny_prepared, cache, *model)
    # Here (with every package): prepare the data stages only, into the cache to carry.
    run_pipeline(
        load_config(None, overrides=overrides), tmp_path / "unused", until="tokenize", progress=False
    )
    assert (cache / "tokenize").is_dir() and not (tmp_path / "unused" / "run.json").exists()

    # There (without them): the same config finds embed and tokenize in the carried cache.
    args = ["train", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    for o in [*overrides, "train.epochs=3"]:
        args += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TensorBoard is not installed" in proc.stdout
    assert "embed: cached" in proc.stdout and "tokenize: cached" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["invalid_rate"] == 0.0 and "recall@10" in metrics
    if model:
        assert "beam/recall@10" in metrics and "beam+head/ndcg@10" in metrics
