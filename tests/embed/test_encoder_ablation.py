"""``genrec bench encoders`` on a tiny catalogue: three variants through the whole pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.bench.encoders import run_encoder_ablation

TINY = [
    "data.cold_start=0.15",
    "run.threads=1",
    "embed.progress=false",
    "embed.multimodal.modalities=['text', 'attributes', 'collaborative']",
    "embed.multimodal.dim=16",
    "embed.multimodal.hidden=32",
    "embed.multimodal.epochs=5",
    "embed.multimodal.batch_size=32",
    "embed.multimodal.attributes.dim=6",
    "embed.multimodal.collaborative.dim=8",
    "embed.diffusion.hidden=32",
    "embed.diffusion.layers=1",
    "embed.diffusion.steps=50",
    "embed.diffusion.sample_steps=5",
    "embed.diffusion.samples=1",
    "tokenize.method=rqkmeans",
    "tokenize.levels=2",
    "tokenize.codebook_size=8",
    "tokenize.kmeans_backend=torch",
    "tokenize.progress=false",
    "model.d_model=32",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.num_heads=2",
    "model.head_dim=16",
    "model.d_ff=64",
    "model.user_buckets=0",
    "train.max_history=6",
    "train.batch_size=64",
    "train.epochs=1",
    "train.patience=0",
    "train.val_beam=10",
    "eval.beam_size=10",
    "eval.ks=[5, 10]",
]


def test_ablation_runs_every_variant_and_reports_cold_targets(clustered_path, text_cache, tmp_path):
    overrides = [
        f"data.prepared='{clustered_path}'",
        f"run.cache_dir='{tmp_path / 'cache'}'",
        f"embed.cache_dir='{text_cache}'",
        *TINY,
    ]
    result = run_encoder_ablation(
        "configs/ablation_encoders_beauty.toml",
        tmp_path / "out",
        tmp_path / "runs",
        overrides=overrides,
        label="test",
    )
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["text", "multimodal", "diffusion"]
    for row in rows.values():
        assert 0 <= row["recall@10"] <= 1 and row["cold_target/users"] > 0
        assert row["cold_target/recall@10"] is not None and row["warm_target/ndcg@10"] is not None
        assert "tokenizer.collisions.collision_rate" in row
    assert (
        "probe.content.recall@10" in rows["multimodal"] and "probe.diffusion.recall@10" in rows["diffusion"]
    )
    assert rows["text"]["embed.dimension"] == 384 and rows["multimodal"]["embed.dimension"] == 16 + 8
    for name in rows:  # the trie is built from every item's semantic ID, cold items included
        assert np.load(tmp_path / "runs" / name / "tokenizer" / "semantic_ids.npy").shape[0] == 60
    for name, row in rows.items():  # each row holds its own run's figures, not another variant's
        run = tmp_path / "runs" / name
        assert row["run_dir"] == str(run)
        metrics = json.loads((run / "metrics.json").read_text())
        for key in ("recall@10", "ndcg@10", "cold_target/recall@10", "cold_target/users", "warm_target/ndcg@10"):
            assert row[key] == metrics[key], (name, key)
        tokenizer = json.loads((run / "tokenizer" / "metrics.json").read_text())
        assert row["tokenizer.collisions.collision_rate"] == tokenizer["collisions"]["collision_rate"]
    assert len({rows[n]["recall@10"] for n in rows} | {rows[n]["ndcg@10"] for n in rows}) > 1
    saved = json.loads((tmp_path / "out" / "encoders.json").read_text())
    assert saved["label"] == "test" and saved["cold_start"]["fraction"] == 0.15 and len(saved["rows"]) == 3
    assert set(saved["goals"]) >= {
        "multimodal_beats_text_overall_recall@10",
        "diffusion_beats_multimodal_cold_recall@10",
    }
    assert "| multimodal |" in (tmp_path / "out" / "encoders.md").read_text()


def test_ablation_needs_the_cold_start_protocol(tmp_path):
    from genrec.settings import ConfigError

    with pytest.raises(ConfigError, match=r"data\.cold_start"):
        run_encoder_ablation(
            "configs/ablation_encoders_beauty.toml", tmp_path, tmp_path, overrides=["data.cold_start=0"]
        )
    with pytest.raises(ConfigError, match="unknown encoder variant"):
        run_encoder_ablation("configs/ablation_encoders_beauty.toml", tmp_path, tmp_path, variants=["audio"])
