"""``genrec train`` end to end on a tiny dataset: every stage runs, then is reused; the run folder
serves ``genrec recommend``; a run folder of another tokenizer is refused."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import load_config
from genrec.pipeline import run_pipeline
from genrec.run_format import RunError
from genrec.serve.run import load_run
from tests.pipeline.conftest import tiny_overrides


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_prepared):
    root = tmp_path_factory.mktemp("pipeline")
    overrides = tiny_overrides(tiny_prepared, root / "cache")
    result = run_pipeline(load_config(None, overrides=overrides), root / "run", progress=False)
    return root, overrides, result


def test_whole_pipeline_trains_and_tests(finished_run):
    root, _, result = finished_run
    run = root / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "recall@5",
        "recall@10",
        "ndcg@5",
        "ndcg@10",
        "mrr",
        "coverage@10",
        "gini@10",
        "invalid_rate",
    ):
        assert key in metrics, key
    assert metrics["invalid_rate"] == 0.0
    assert metrics["recall@10"] > 0.8  # the cycle is learnable; random would be 10/24
    assert [s for s in ("prepare", "embed", "tokenize", "train", "test") if s in result.stages] == [
        "prepare",
        "embed",
        "tokenize",
        "train",
        "test",
    ]
    assert not result.stages["embed"]["cached"] and not result.stages["tokenize"]["cached"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recall@10"] == metrics["recall@10"] and set(summary["stage_seconds"]) >= {"train", "test"}
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in log} >= {"train", "val"}
    for name in (
        "config.json",
        "run.json",
        "items.parquet",
        "tokenizer/semantic_ids.npy",
        "model.safetensors",
    ):
        assert (run / name).is_file(), name


def test_unchanged_stages_are_reused(finished_run):
    root, overrides, first = finished_run
    again = run_pipeline(load_config(None, overrides=overrides), root / "run", progress=False)
    assert all(again.stages[s]["cached"] for s in ("embed", "tokenize", "train", "test"))
    assert again.metrics == first.metrics
    # Another run folder reuses the cached data stages but trains anew.
    other = run_pipeline(
        load_config(None, overrides=[*overrides, "train.epochs=1"]), root / "other", progress=False
    )
    assert other.stages["tokenize"]["cached"] and not other.stages["train"]["cached"]


def test_run_folder_of_another_tokenizer_is_refused(finished_run):
    root, overrides, _ = finished_run
    changed = load_config(None, overrides=[*overrides, "tokenize.levels=3"])
    with pytest.raises(RunError, match="different semantic IDs"):
        run_pipeline(changed, root / "run", progress=False)


def test_recommend_from_python_and_cli(finished_run):
    root, _, _ = finished_run
    rec = load_run(root / "run", device="cpu")
    out = rec.recommend_ids([["I003", "I004", "I005"]], k=5)[0]
    assert len(out) == 5 and len({r.item_idx for r in out}) == 5
    assert out[0].item_id == "I006" and out[0].title == "item 6"  # the cycle's next item
    assert all(a.score >= b.score for a, b in itertools.pairwise(out))
    by_index = rec.recommend_indices([np.array([3, 4, 5])], k=5)[0]
    assert [r.item_id for r in by_index] == [r.item_id for r in out]
    with pytest.raises(KeyError, match="not in this run's catalogue"):
        rec.recommend_ids([["nope"]], k=5)

    runner = CliRunner()
    res = runner.invoke(
        app, ["recommend", "--run", str(root / "run"), "--history", "I003,I004,I005", "--k", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert [r["item_id"] for r in json.loads(res.output)] == [r.item_id for r in out[:3]]
    res = runner.invoke(app, ["recommend", "--run", str(root / "run"), "--history", "I003,BAD", "--k", "3"])
    assert res.exit_code == 1 and "BAD" in res.output


def test_cli_reports_config_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--set", "train.bach_size=3", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "train.bach_size" in res.output and "batch_size" in res.output


def test_a_registered_dataset_missing_locally_is_downloaded_or_named(tmp_path, monkeypatch):
    """No network here: the download is replaced, and its failure must say what to do."""
    from genrec.data.errors import DownloadError
    from genrec.pipeline import stages
    from genrec.settings import ConfigError

    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path / "data"))
    asked = []

    def offline(name, *a, **k):
        asked.append(name)
        raise DownloadError("https://example.invalid: no network")

    monkeypatch.setattr(stages, "download_dataset", offline)
    config = load_config(None, overrides=[f"run.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ConfigError, match=r"downloading 'amazon2014/beauty' failed.*GENREC_DATA_DIR"):
        stages.prepare_stage(config, stages.StageCache(tmp_path / "cache"))
    assert asked == ["amazon2014/beauty"]
    asked.clear()
    config = load_config(None, overrides=[f"run.cache_dir={tmp_path / 'cache'}", "data.download=false"])
    with pytest.raises(ConfigError, match="are not at"):
        stages.prepare_stage(config, stages.StageCache(tmp_path / "cache"))
    assert asked == []
