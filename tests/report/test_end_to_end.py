"""SASRec through `genrec train --seeds` (the generative models' pipeline, checkpoints and evaluator),
then `genrec report` beside a baseline: what a user runs, on a small dataset."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from genrec.cli import app


@pytest.fixture(scope="module")
def sasrec_seeds(toy, tmp_path_factory):
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("sasrec") / "runs"
    overrides = [
        f"data.prepared={toy['data']}",
        f"run.cache_dir={out.parent / 'cache'}",
        "run.threads=1",
        "model.kind=sasrec",
        "model.d_model=32",
        "model.decoder_layers=2",
        "model.num_heads=2",
        "model.head_dim=16",
        "model.d_ff=64",
        "model.dropout=0.1",
        "model.exclude_seen=true",
        "train.max_history=8",
        "train.batch_size=16",
        "train.lr=0.005",
        "train.warmup_steps=5",
        "train.epochs=8",
        "train.patience=0",
        "eval.ks=[5, 10]",
    ]
    args = ["train", "--run-dir", str(out), "--seeds", "2", "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


def test_seeds_are_trained_tested_and_aggregated(sasrec_seeds):
    seeds = json.loads((sasrec_seeds / "seeds.json").read_text())
    assert seeds["seeds"] == [0, 1] and seeds["runs"] == ["seed-0", "seed-1"]
    per_seed = []
    for name in seeds["runs"]:
        run = sasrec_seeds / name
        assert (run / "model.safetensors").is_file() and (run / "checkpoints").is_dir()
        evaluated = json.loads((run / "test_eval.json").read_text())
        assert evaluated["recommender_config"]["exclude_seen"] is True
        per_seed.append(evaluated["metrics"]["recall@10"])
        cost = json.loads((run / "cost.json").read_text())
        assert cost["decode"]["latency_ms_p50"] > 0 and cost["parameters"] > 0 and cost["train_seconds"] > 0
    assert per_seed[0] != per_seed[1]  # different seeds, different models
    assert seeds["aggregate"]["recall@10"]["mean"] == pytest.approx(sum(per_seed) / 2)


def test_report_puts_sasrec_beside_a_baseline(sasrec_seeds, toy, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["report", str(sasrec_seeds), str(toy["mostpop"]), "--out", str(out), "--data", str(toy["data"])]
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads((out / "report.json").read_text())
    label = numbers["methods"][0]["label"]
    sasrec, pop = numbers["accuracy"][label], numbers["accuracy"]["mostpop"]
    assert sasrec["recall@10"]["n"] == 2 and sasrec["recall@10"]["std"] is not None
    assert sasrec["recall@10"]["mean"] > pop["recall@10"]["mean"]  # it learned the walk; popularity cannot
    assert numbers["cost"][label]["latency_ms_p50"] > 0
    assert {t["metric"] for t in numbers["significance"]} == {"recall@10", "ndcg@10"}
    assert (out / "report.md").read_text().count("±") >= 4


def test_a_sasrec_run_recommends_by_inner_product(sasrec_seeds):
    from genrec.serve.inner_product import InnerProductRecommender
    from genrec.serve.run import load_run

    rec = load_run(sasrec_seeds / "seed-0", device="cpu")
    assert isinstance(rec.recommender, InnerProductRecommender)
    history = [0, 1, 2]
    out = rec.recommend_indices([history], k=5)[0]
    assert len(out) == 5 and len({r.item_idx for r in out}) == 5
    assert not {r.item_idx for r in out} & set(history)  # model.exclude_seen


def test_genrec_recommend_serves_a_sasrec_run(sasrec_seeds):
    res = CliRunner().invoke(
        app,
        ["recommend", "--run", str(sasrec_seeds / "seed-0"), "--history", "0,1,2", "--by-index", "--k", "3"],
    )
    assert res.exit_code == 0, res.output
    assert "inner product" in res.output
