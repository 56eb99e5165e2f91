"""genrec bench scale: the synthetic catalogue generator and the per-stage measurement."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.bench.scale import STAGES, parse_sizes, run_measured, run_scale_benchmark
from genrec.bench.scale_data import (
    STANDARD_SIZES,
    SyntheticSpec,
    _cover_every_item,
    _zipf_draws,
    generate,
    write_raw,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiger_beauty.toml"


def _small(**kw) -> SyntheticSpec:
    return SyntheticSpec(**{"items": 2000, "users": 3000, "interactions": 30000, "seed": 1, **kw})


# ---------------------------------------------------------------- the generator
def test_same_seed_same_data_other_seed_other_data():
    a, b, c = generate(_small()), generate(_small()), generate(_small(seed=2))
    for name in ("user", "item", "timestamp", "category", "brand", "successors"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.item, c.item)


@pytest.mark.parametrize("items,users,interactions", [(2000, 3000, 30000), (50, 7, 400), (300, 100, 300)])
def test_exact_counts_every_item_and_three_per_user(items, users, interactions):
    d = generate(SyntheticSpec(items, users, interactions, seed=3))
    assert len(d.item) == len(d.user) == len(d.timestamp) == interactions
    assert np.bincount(d.item, minlength=items).min() >= 1 and d.item.max() < items
    counts = np.bincount(d.user, minlength=users)
    assert len(counts) == users and counts.min() >= 3
    assert np.all(np.diff(d.user) >= 0)  # sorted by user
    same = d.user[1:] == d.user[:-1]
    assert np.all(np.diff(d.timestamp)[same] > 0)  # strictly chronological within a user


def test_standard_sizes_are_the_issue_table():
    assert STANDARD_SIZES[1_000_000] == (1_000_000, 20_000_000)
    s = SyntheticSpec.standard(100_000)
    assert (s.users, s.interactions) == (200_000, 2_000_000)
    odd = SyntheticSpec.standard(300)
    assert odd.interactions >= 3 * odd.users and odd.interactions >= odd.items


def _top_share(d, items, share=0.01):
    c = np.sort(np.bincount(d.item, minlength=items))[::-1]
    return c[: max(1, int(items * share))].sum() / c.sum()


def test_popularity_is_skewed_and_uniform_without_an_exponent():
    # The top 1% of items: a Zipf catalogue gives them >10% of the interactions, a uniform one ~1-2%.
    assert _top_share(generate(_small()), 2000) > 0.10
    assert _top_share(generate(_small(zipf=0.0)), 2000) < 0.05


def test_zipf_draws_match_the_power_law_bins():
    n, draws = 10, 400_000
    got = np.bincount(_zipf_draws(n, 1.0, draws, np.random.default_rng(0)), minlength=n) / draws
    # P(rank k) is the power law's mass on [k + 1, k + 2): ln((k + 2) / (k + 1)) / ln(n + 1).
    want = np.array([math.log((k + 2) / (k + 1)) / math.log(n + 1) for k in range(n)])
    assert np.abs(got - want).max() < 0.004
    got = np.bincount(_zipf_draws(n, 0.5, draws, np.random.default_rng(1)), minlength=n) / draws
    want = np.array([(math.sqrt(k + 2) - math.sqrt(k + 1)) / (math.sqrt(n + 1) - 1) for k in range(n)])
    assert np.abs(got - want).max() < 0.004


def test_next_items_follow_the_successors_at_the_set_rate():
    def follow_rate(spec):
        d = generate(spec)
        same = d.user[1:] == d.user[:-1]
        prev, nxt = d.item[:-1][same], d.item[1:][same]
        # Successors lie in the item's own category.
        assert np.array_equal(d.category[d.successors], np.repeat(d.category[:, None], spec.successors, 1))
        return (d.successors[prev] == nxt[:, None]).any(1).mean()

    assert abs(follow_rate(_small(follow=0.6)) - 0.6) < 0.03
    assert follow_rate(_small(follow=0.0)) < 0.02


def test_cover_every_item_moves_only_spare_slots():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        # Down to exactly n slots: then every item must end up with one (no slot to spare).
        item = rng.integers(0, n // 2 + 1, int(rng.integers(n, 4 * n)) if _ % 2 else n)
        before = item.copy()
        missing = np.setdiff1d(np.arange(n), before)
        _cover_every_item(item, n, rng)
        after = np.bincount(item, minlength=n)
        assert after.min() >= 1
        assert (item != before).sum() == len(missing)  # one slot per missing item, no more
        assert set(item[item != before]) == set(missing.tolist())


def test_spec_rejects_impossible_counts():
    with pytest.raises(ValueError, match="3 per user"):
        SyntheticSpec(10, 100, 250)
    with pytest.raises(ValueError, match="cover"):
        SyntheticSpec(1000, 10, 500)


def test_raw_tables_prepare_into_the_generated_dataset(tmp_path):
    from genrec.data import load_prepared
    from genrec.data.prepare import prepare_dataset

    spec = SyntheticSpec(60, 40, 400, seed=4)
    raw = write_raw(spec, tmp_path / "raw")
    with pytest.raises(FileExistsError):
        write_raw(spec, tmp_path / "raw")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a synthetic"):
        write_raw(spec, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    prepared = prepare_dataset(
        "table", raw / "interactions.parquet", tmp_path / "prepared", items_file=raw / "items.parquet"
    )
    ds = load_prepared(prepared)
    assert (ds.num_items, ds.num_users, ds.num_interactions) == (60, 40, 400)
    assert {"title", "brand", "categories"} <= set(ds.item_text_columns)
    d = generate(spec)
    item_ids = np.asarray(ds.item_table(["item_id"]).column("item_id").to_pylist(), dtype=np.int64)
    user_ids = np.asarray(ds.user_table().column("user_id").to_pylist(), dtype=np.int64)
    for u in range(ds.num_users):  # every user's sequence, in time order, as generated
        assert np.array_equal(item_ids[ds.sequence(u)], d.item[d.user == user_ids[u]])
    table = ds.item_table().to_pylist()
    row = table[int(np.flatnonzero(item_ids == 7)[0])]
    assert row["brand"] == f"brand {d.brand[7]}"
    assert row["categories"] == [f"department {d.category[7] % 7}", f"category {d.category[7]}"]
    test = ds.split("test")
    assert len(test) == 40 and np.all(test.history_lengths >= 2)


# ---------------------------------------------------------------- measuring a child
def test_parse_sizes():
    assert parse_sizes("12k,100k,1m") == (12_000, 100_000, 1_000_000)
    assert parse_sizes("300, 1.5k") == (300, 1500)
    for bad in ("", "12q", "1", "0.5k1"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_run_measured_peak_memory_exit_code_and_timeout(tmp_path):
    alloc = "import numpy as np, time; a = np.ones(40_000_000); time.sleep(0.6)"  # 320 MB touched
    ok = run_measured([sys.executable, "-c", alloc], 60, tmp_path / "a.log")
    assert ok["status"] == "ok" and ok["returncode"] == 0
    assert 0.29 < ok["peak_rss_gb"] < 1.5
    failed = run_measured([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 60, tmp_path / "b.log")
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert "boom" in (tmp_path / "b.log").read_text()
    # A child that leaves a grandchild: the whole group goes at the timeout.
    marker = tmp_path / "grandchild-alive"
    script = f"sleep 30 & sleep 3 && touch {marker}; wait"
    late = run_measured(["sh", "-c", script], 1, tmp_path / "c.log")
    assert late["status"] == "timed out" and late["seconds"] < 10
    import time

    time.sleep(3)
    assert not marker.exists()


# ---------------------------------------------------------------- the sweep end to end
@pytest.mark.slow
def test_every_stage_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    result = run_scale_benchmark(out, [150], config=CONFIG, work_dir=tmp_path / "work", log=lambda s: None)
    rows = result["rows"]
    assert [r["stage"] for r in rows] == list(STAGES)
    assert all(r["status"] == "ok" for r in rows), [(r["stage"], r.get("detail")) for r in rows]
    assert all(r["seconds"] > 0 and 0.05 < r["peak_rss_gb"] < 8 for r in rows)
    test = rows[-1]
    assert test["test_users"] == 300 and test["test_recall@10"] is not None
    train = rows[STAGES.index("train")]
    assert train["train_epochs"] == pytest.approx(1.0) and train["train_steps"] > 0
    saved = json.loads((out / "scale.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["config"]["sizes"] == [150]
    assert (out / "scale.csv").read_text().count("\n") == len(STAGES) + 1
    assert (out / "scale.png").stat().st_size > 1000


def test_a_stage_past_its_limit_is_recorded_and_later_ones_skipped(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"items": 999, "users": 1, "interactions": 3, "stage": "prepare", "status": "ok", "seconds": 1.0,
               "peak_rss_gb": 0.1}  # fmt: skip
    (out / "scale.json").write_text(json.dumps({"rows": [earlier], "seconds": 5.0}))
    result = run_scale_benchmark(
        out,
        [100],
        config=CONFIG,
        stages=("prepare", "embed"),
        stage_timeouts={"prepare": 1.0},
        merge=True,
        log=lambda s: None,
    )
    by_stage = {r["stage"]: r for r in result["rows"] if r["items"] == 100}
    assert by_stage["generate"]["status"] == "ok"
    assert by_stage["prepare"]["status"] == "timed out" and 1.0 <= by_stage["prepare"]["seconds"] < 10
    assert by_stage["embed"]["status"] == "skipped" and "prepare (timed out)" in by_stage["embed"]["detail"]
    assert "tokenize" not in by_stage  # not asked for
    assert earlier in result["rows"]  # --merge keeps other sizes, and the settings they ran with
    assert result["payload"]["earlier_runs"] == [{"seconds": 5.0}]
    assert result["payload"]["work_dir"] is None  # the temporary work folder is gone


def test_cli_rejects_bad_options_before_running(tmp_path):
    from typer.testing import CliRunner

    from genrec.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    for args, where in (
        (["--sizes", "12q"], "--sizes"),
        (["--timeout", "bogus=3"], "--timeout"),
        (["--timeout", "train=-1"], "--timeout"),
        (["--stages", "prepare,fit"], "--stages"),
        (["--config", str(tmp_path / "missing.toml")], "--config"),
    ):
        result = runner.invoke(app, ["bench", "scale", "--out", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert where in result.output
    assert not out.exists()  # nothing written
