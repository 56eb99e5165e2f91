"""Multi-seed training: seeds s..s+N-1 each into its own folder, then mean and spread in seeds.json."""

from __future__ import annotations

import json

import pytest

from genrec.config import load_config
from genrec.report.seeds import run_seeds, seed_list


def test_run_seeds_trains_each_seed_and_aggregates(tmp_path):
    config = load_config(None, overrides=["run.seed=7", "run.name=demo"])
    seen = []

    def train_one(cfg, folder):
        seen.append((cfg.run.seed, folder.name))
        return {"recall@10": 0.08 + 0.01 * (cfg.run.seed - 7), "ndcg@10": 0.05, "note": "text is skipped"}

    path = run_seeds(train_one, config, tmp_path / "runs", 3, say=lambda _: None)
    assert seen == [(7, "seed-7"), (8, "seed-8"), (9, "seed-9")]
    assert config.run.seed == 7  # the caller's config is not changed
    saved = json.loads(path.read_text())
    assert saved["seeds"] == [7, 8, 9] and saved["runs"] == ["seed-7", "seed-8", "seed-9"]
    assert saved["name"] == "demo"
    recall = saved["aggregate"]["recall@10"]
    assert recall["n"] == 3 and recall["mean"] == pytest.approx(0.09) and recall["std"] == pytest.approx(0.01)
    assert saved["aggregate"]["ndcg@10"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert "note" not in saved["aggregate"]
    assert saved["per_seed"]["seed-8"]["recall@10"] == pytest.approx(0.09)


def test_seed_count_must_be_positive():
    with pytest.raises(ValueError, match="--seeds"):
        seed_list(0, 0)
