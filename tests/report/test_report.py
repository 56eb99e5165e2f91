"""genrec report end to end on small datasets: its numbers, its files, and the runs it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from genrec.eval import load_per_user
from genrec.report import ReportOptions, RunMismatchError, build_report, compare_paired
from genrec.report.seeds import seed_list, write_seeds_file
from tests.report.conftest import fake_training_run, make_dataset, score


def test_report_compares_two_methods(toy, tmp_path):
    report = build_report([toy["mostpop"], toy["cooc"]], tmp_path / "out", data=toy["data"])
    numbers = report.data
    saved = json.loads(toy["cooc"].read_text())["metrics"]
    assert numbers["accuracy"]["cooccurrence"]["recall@10"]["mean"] == pytest.approx(saved["recall@10"])
    assert numbers["beyond_accuracy"]["mostpop"]["gini@10"]["mean"] is not None

    # The significance table is the paired test of the saved per-user arrays, Holm-adjusted.
    tests = {t["metric"]: t for t in numbers["significance"]}
    assert set(tests) == {"recall@10", "ndcg@10"}
    a, b = load_per_user(toy["mostpop"]), load_per_user(toy["cooc"])
    direct = compare_paired(a["ndcg@10"], b["ndcg@10"])
    assert tests["ndcg@10"]["p_t"] == pytest.approx(direct.p_t)
    assert tests["ndcg@10"]["mean_diff"] == pytest.approx(direct.mean_diff)
    assert tests["ndcg@10"]["p_t_holm"] >= tests["ndcg@10"]["p_t"]

    # Buckets partition the users, and the bucket means average back to the overall metric.
    pop = numbers["popularity_buckets"]
    counts = [b["users"] for b in pop["buckets"]]
    assert sum(counts) == numbers["num_users"] and all(c > 0 for c in counts)
    cells = [c["mean"] for c in pop["by_method"]["cooccurrence"]["recall@10"]]
    assert np.dot(cells, counts) / sum(counts) == pytest.approx(saved["recall@10"])
    hist = numbers["history_buckets"]
    assert sum(b["users"] for b in hist["buckets"]) == numbers["num_users"]

    text = (tmp_path / "out" / "report.md").read_text()
    for heading in (
        "## Accuracy",
        "## Paired significance",
        "## Beyond accuracy",
        "by item popularity",
        "by history length",
        "## Cost",
    ):
        assert heading in text
    assert json.loads((tmp_path / "out" / "report.json").read_text())["split"] == "test"
    pytest.importorskip("matplotlib")
    for name in ("accuracy", "beyond_accuracy", "popularity_buckets", "history_buckets"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multi_seed_runs_give_mean_and_spread(toy, tmp_path):
    folder = tmp_path / "cooc-seeds"
    seeds = seed_list(0, 2)
    per_seed = []
    for seed, window in zip(seeds, (1, 3), strict=True):  # two "seeds" that really differ
        run = fake_training_run(folder / f"seed-{seed}", toy["data"], seed, "cooc", window=window)
        per_seed.append(json.loads((run / "test_eval.json").read_text())["metrics"])
    write_seeds_file(folder, name="cooc", seeds=seeds, runs=[f"seed-{s}" for s in seeds], per_seed=per_seed)

    report = build_report(
        [folder, toy["mostpop"]], tmp_path / "out", data=toy["data"], options=ReportOptions(plots=False)
    )
    cell = report.data["accuracy"]["cooc"]["ndcg@10"]
    values = [m["ndcg@10"] for m in per_seed]
    assert cell["n"] == 2
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(
        np.std(values, ddof=1)
    )
    assert report.data["methods"][0]["seeds"] == [0, 1]
    cost = report.data["cost"]["cooc"]
    assert cost["train_seconds"] == pytest.approx(10.5) and cost["latency_ms_p50"] == pytest.approx(1.5)
    assert "± " in report.markdown
    aggregate = json.loads((folder / "seeds.json").read_text())["aggregate"]["ndcg@10"]
    assert aggregate["mean"] == pytest.approx(cell["mean"])


def test_runs_on_different_datasets_are_refused(toy, tmp_path):
    other = make_dataset(tmp_path / "other", seed=1)  # same name, items and users; other sequences
    foreign = score(other, "mostpop", tmp_path / "foreign.json")
    with pytest.raises(RunMismatchError, match="different datasets or splits"):
        build_report([toy["mostpop"], foreign], tmp_path / "out")
    with pytest.raises(RunMismatchError, match="not the dataset these runs were scored on"):
        build_report([toy["mostpop"]], tmp_path / "out", data=other)


def test_runs_on_different_splits_are_refused(toy, tmp_path):
    valid = score(toy["data"], "mostpop", tmp_path / "valid.json", split="valid")
    with pytest.raises(RunMismatchError, match=r"split 'test' but .* has split 'valid'"):
        build_report([toy["cooc"], valid], tmp_path / "out")


def test_a_separately_prepared_copy_is_accepted_with_a_note(toy, tmp_path):
    copy = make_dataset(tmp_path / "copy", seed=0)  # same content, another manifest (another genrec)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["genrec_version"] = "0.0.0-other"  # the fingerprint ignores only the creation time
    (copy / "manifest.json").write_text(json.dumps(manifest))
    again = score(copy, "mostpop", tmp_path / "again.json")
    report = build_report(
        [toy["cooc"], again], tmp_path / "out", data=toy["data"], options=ReportOptions(plots=False)
    )
    assert any("separately prepared copy" in n for n in report.data["notes"])


def test_cli_report_refuses_mismatched_runs_with_a_clear_error(toy, tmp_path):
    from genrec.cli.report import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "report" a named subcommand
    valid = score(toy["data"], "mostpop", tmp_path / "valid.json", split="valid")
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(toy["cooc"]), str(valid), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "cannot compare runs scored on different data" in result.output
    ok = runner.invoke(
        app,
        [
            "report",
            str(toy["mostpop"]),
            str(toy["cooc"]),
            "--out",
            str(tmp_path / "ok"),
            "--data",
            str(toy["data"]),
            "--no-plots",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "ok" / "report.md").is_file()


def test_methods_that_leave_out_seen_items_are_marked(toy, tmp_path):
    from genrec.data import load_prepared
    from genrec.eval import MostPop, evaluate

    dataset = load_prepared(toy["data"])
    evaluate(
        MostPop.from_dataset(dataset),
        dataset,
        "test",
        progress=False,
        exclude_history=True,
        output=tmp_path / "x.json",
    )
    report = build_report(
        [tmp_path / "x.json", toy["cooc"]],
        tmp_path / "out",
        labels=["pop-unseen", "cooc"],
        options=ReportOptions(plots=False),
    )
    assert [m["excludes_seen"] for m in report.data["methods"]] == [True, False]
    assert any(n.startswith("pop-unseen never recommend") for n in report.data["notes"])
    assert "| excluded |" in report.markdown


def test_a_generative_run_that_masks_its_history_counts_as_excluding_seen_items():
    from types import SimpleNamespace

    from genrec.report.build import excludes_seen

    def method(info):
        return SimpleNamespace(evaluations=[SimpleNamespace(info=info)])

    # genrec train records model.exclude_seen at the top level of test_eval.json
    assert excludes_seen(method({"exclude_history": False, "exclude_seen": True, "recommender_config": {}}))
    assert excludes_seen(method({"recommender_config": {"exclude_seen": True}}))
    assert not excludes_seen(method({"exclude_history": False, "exclude_seen": False}))
