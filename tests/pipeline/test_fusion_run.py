"""`genrec train` with fusion: weights tuned on validation, the parts reported beside the final list,
and a finished run that recommends exactly what its test scored."""

from __future__ import annotations

import json

import numpy as np

from genrec.config import load_config
from genrec.data import load_prepared
from genrec.pipeline import run_pipeline
from genrec.serve.run import load_run
from tests.pipeline.conftest import tiny_overrides

FUSED = [
    "model.kind=item_decoder",
    "model.item_embeddings=true",
    "model.item_loss=1.0",
    "model.exclude_seen=true",
    "model.tune_fusion=true",
    "model.fusion_candidates=4",
    "train.epochs=6",
]


def test_fused_run_tunes_on_validation_reports_its_parts_and_serves_the_same_lists(tmp_path, tiny_prepared):
    run_dir = tmp_path / "run"
    config = load_config(None, overrides=tiny_overrides(tiny_prepared, tmp_path / "cache", *FUSED))
    result = run_pipeline(config, run_dir, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    fusion = info["fusion"]
    assert fusion["tuned"] and fusion["tune_users"] > 0
    table = json.loads((run_dir / "fusion_tuning.json").read_text())["table"]
    chosen = [r for r in table if all(r[k] == v for k, v in fusion["weights"].items())]
    assert len(chosen) == 1 and chosen[0]["ndcg@10"] == max(r["ndcg@10"] for r in table)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for part in ("beam", "beam+head"):
        assert f"{part}/recall@10" in metrics
        assert (run_dir / f"test_eval.{part.replace('+', '_')}.json").is_file()
    # no cold candidates: no "without cold candidates" list, which would repeat the fused one
    assert not any(k.startswith("no-cold/") for k in metrics) and not (run_dir / "test_eval.no-cold.json").exists()
    assert metrics["recall@10"] == result.metrics["recall@10"]

    # The finished run recommends what the test scored: same hits on the test rows.
    rec = load_run(run_dir, device="cpu")
    dataset = load_prepared(tiny_prepared)
    test = dataset.split("test")
    histories = [h[len(h) - min(len(h), config.train.max_history) :] for h in test.history_list()]
    items, _ = rec.recommender.topk(histories, 10, test.users)
    recall = float(np.mean((items == test.targets[:, None]).any(1)))
    assert np.isclose(recall, metrics["recall@10"])


COLD = [*FUSED, "data.cold_start=0.25", "model.content_vectors=true", "model.cold_candidates=3"]


def test_cold_start_run_puts_cold_items_in_lists_reports_them_and_serves_the_same_lists(tmp_path, tiny_prepared):
    """Content vectors and cold candidates on the cold-start protocol: the weights (cold terms too)
    come from validation, the list without cold items is reported beside the final one, and the
    finished run (its content table in model.safetensors) recommends what the test scored."""
    run_dir = tmp_path / "cold"
    config = load_config(None, overrides=tiny_overrides(tiny_prepared, tmp_path / "cache", *COLD))
    result = run_pipeline(config, run_dir, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    assert "item_content" in info["inputs"]
    tuning = json.loads((run_dir / "fusion_tuning.json").read_text())
    cold_rows = tuning["cold"]["table"]
    w = info["fusion"]["weights"]
    chosen = [
        r
        for r in cold_rows
        if all(r[key] == w[key] for key in ("cold_bias", "cold_seq_weight", "cold_epsilon", "cold_sim_weight"))
    ]
    eligible = [r["ndcg@10"] for r in cold_rows if r["meets_warm_floor"]]
    assert len(chosen) == 1 and chosen[0]["ndcg@10"] == max(eligible)
    metrics = result.metrics
    for key in ("cold_target/recall@10", "warm_target/recall@10", "no-cold/recall@10", "no-cold/cold_target/recall@10"):
        assert key in metrics
    assert metrics["no-cold/cold_target/recall@10"] == 0.0  # without cold candidates no cold item is listed

    rec = load_run(run_dir, device="cpu")
    assert rec.recommender.model.cold_items().sum() > 0
    dataset = load_prepared(result.stages["prepare"]["path"])
    assert len(dataset.cold_items())
    test = dataset.split("test")
    items, _ = rec.recommender.topk(test.history_list(), 10, test.users)
    recall = float(np.mean((items == test.targets[:, None]).any(1)))
    assert np.isclose(recall, metrics["recall@10"])


def test_profile_similarity_joins_the_fusion_is_saved_and_a_fusion_change_keeps_the_training(tmp_path, tiny_prepared):
    """model.profile_embeddings: the run keeps the embeddings (similarity.safetensors), tunes the
    similarity's weight on validation with the others, recommends what its test scored; changing
    only fusion settings afterwards reuses the trained weights."""
    from genrec.profile_similarity import SIMILARITY_FILE, load_similarity

    run_dir = tmp_path / "sim"
    overrides = tiny_overrides(tiny_prepared, tmp_path / "cache", *COLD, "model.profile_embeddings=content")
    result = run_pipeline(load_config(None, overrides=overrides), run_dir, progress=False)
    dataset = load_prepared(result.stages["prepare"]["path"])
    sim = load_similarity(run_dir / SIMILARITY_FILE, dataset.num_items)
    assert sim.source == "content"
    table = json.loads((run_dir / "fusion_tuning.json").read_text())["table"]
    from genrec.fusion_tuning import SIM_WEIGHTS

    assert {r["sim_weight"] for r in table} == set(SIM_WEIGHTS)
    info = json.loads((run_dir / "run.json").read_text())
    w = info["fusion"]["weights"]
    chosen = [r for r in table if all(r[k] == w[k] for k in ("head_weight", "cooc_weight", "eps", "sim_weight"))]
    assert len(chosen) == 1 and chosen[0]["ndcg@10"] == max(r["ndcg@10"] for r in table)

    rec = load_run(run_dir, device="cpu")
    assert rec.recommender.fusion.similarity is not None
    test = dataset.split("test")
    items, _ = rec.recommender.topk(test.history_list(), 10, test.users)
    assert np.isclose(float(np.mean((items == test.targets[:, None]).any(1))), result.metrics["recall@10"])

    weights = (run_dir / "model.safetensors").read_bytes()
    again = run_pipeline(
        load_config(None, overrides=[*overrides, "model.profile_embeddings=", "model.fusion_candidates=2"]),
        run_dir,
        progress=False,
    )
    assert again.train["cached"] and (run_dir / "model.safetensors").read_bytes() == weights
    assert not again.stages["test"]["cached"]
