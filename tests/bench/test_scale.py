"""genrec bench scale: the synthetic catalogue generator and the per-stage measurement."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.bench import scale_decode
from genrec.bench.measured_process import run_measured
from genrec.bench.scale import (
    DECODE_STAGES,
    STAGES,
    TRAIN_BUDGET_S,
    parse_sizes,
    run_scale_benchmark,
    stage_commands,
)
from genrec.bench.scale_data import (
    STANDARD_SIZES,
    SyntheticEmbeddings,
    SyntheticSpec,
    _cover_every_item,
    _zipf_draws,
    generate,
    synthetic_codes,
    synthetic_semantic_ids,
    write_raw,
)
from genrec.config import load_config

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


def test_the_training_stages_run_under_the_benchmarks_budget_not_the_profiles(tmp_path):
    commands = stage_commands(tmp_path, CONFIG, "cpu", 0, 0, SyntheticSpec.standard(12_000))
    for stage in ("tokenize", "train", "test"):
        cmd = commands[stage]
        sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
        config = load_config(CONFIG, "cpu", overrides=sets)
        assert config.train.time_budget_s == TRAIN_BUDGET_S == 480 and config.train.epochs == 1
    assert load_config(CONFIG, "cpu").train.time_budget_s != TRAIN_BUDGET_S  # the demo's cap is other


def test_no_training_budget_trains_the_whole_epoch(tmp_path):
    commands = stage_commands(tmp_path, CONFIG, "cpu", 0, 0, SyntheticSpec.standard(12_000), train_budget_s=0)
    sets = [commands["train"][i + 1] for i, a in enumerate(commands["train"]) if a == "--set"]
    config = load_config(CONFIG, "cpu", overrides=sets)
    assert config.train.time_budget_s == 0 and config.train.epochs == 1


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
        (["--sizes", "none"], "--sizes"),  # none only beside --decode-sizes
        (["--sizes", "none", "--decode-sizes", "1q"], "--decode-sizes"),
        (["--sizes", "none", "--decode-sizes", "1k", "--decode-stages", "trie,fly"], "--decode-stages"),
        (["--sizes", "none", "--decode-sizes", "1k", "--timeout", "beams=3"], "--timeout"),
    ):
        result = runner.invoke(app, ["bench", "scale", "--out", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert where in result.output
    assert not out.exists()  # nothing written


# ---------------------------------------------------------------- the decoding stages
def test_synthetic_codes_have_the_calibrated_cells():
    a, b = synthetic_codes(100_000, seed=0), synthetic_codes(100_000, seed=0)
    assert np.array_equal(a, b) and a.shape == (100_000, 3) and a.min() >= 0 and a.max() <= 255
    assert not np.array_equal(a, synthetic_codes(100_000, seed=1))
    sizes = np.unique(np.ravel_multi_index(a.T, (256,) * 3), return_counts=True)[1]
    # The largest residual k-means cell on the 100k catalogue's embeddings held 54 items.
    assert 30 <= sizes.max() <= 80 and 0.9 < len(sizes) / 100_000 < 0.99
    # Every cell is reachable: with 16 cells and many draws, all appear (the rank-to-cell map is onto).
    small = synthetic_codes(20_000, seed=2, codebook=4, levels=2, zipf=0.3)
    assert len(np.unique(small[:, 0] * 4 + small[:, 1])) == 16
    with pytest.raises(ValueError, match="power of two"):
        synthetic_codes(10, codebook=6)


def test_semantic_ids_number_each_cells_items_in_index_order():
    ids, level_sizes = synthetic_semantic_ids(5000, seed=3, codebook=8, levels=3, zipf=0.8)
    assert len(np.unique(ids, axis=0)) == 5000
    assert level_sizes == [8, 8, 8, int(ids[:, 3].max()) + 1] and level_sizes[3] > 5
    seen: dict[tuple, int] = {}
    for row in ids.tolist():  # brute force: the k-th item of a cell (in item order) gets token k
        cell = tuple(row[:3])
        assert row[3] == seen.get(cell, 0)
        seen[cell] = row[3] + 1


def test_embedding_rows_do_not_depend_on_the_chunking():
    emb = SyntheticEmbeddings(1000, dim=16, seed=4, block=96)
    full = emb.rows(0, 1000)
    assert full.shape == (1000, 16) and full.dtype == np.float32
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = int(rng.integers(0, 1000))
        stop = int(rng.integers(start, 1001))
        assert np.array_equal(emb.rows(start, stop), full[start:stop])
    assert np.array_equal(SyntheticEmbeddings(1000, dim=16, seed=4, block=96).rows(0, 1000), full)
    assert not np.array_equal(SyntheticEmbeddings(1000, dim=16, seed=5, block=96).rows(0, 1000), full)
    with pytest.raises(ValueError):
        emb.rows(10, 1001)


def test_encode_in_chunks_is_the_tokenizers_encode_of_every_row():
    emb = SyntheticEmbeddings(1500, dim=24, seed=6, block=400)
    tokenizer, fit_s, _ = scale_decode.fit_tokenizer(emb, fit_rows=700)
    codes, generate_s, encode_s = scale_decode.encode_in_chunks(tokenizer, emb, chunk=350)
    assert codes.shape == (1500, 3) and fit_s > 0 and generate_s > 0 and encode_s > 0
    assert np.array_equal(codes, tokenizer.encode(emb.rows(0, 1500)))
    assert len(np.unique(codes, axis=0)) > 100  # not a degenerate tokenizer


def test_trie_and_beam_stages_on_a_small_catalogue(tmp_path):
    import torch

    from genrec.decoding import TrieIndex

    work = tmp_path / "work"
    facts = scale_decode.make_semantic_ids(work, 3000, seed=1)
    ids = np.load(work / "ids.npy")
    assert ids.shape == (3000, 4) and facts["level_sizes"][-1] == ids[:, 3].max() + 1
    trie = scale_decode.build_trie(work, seed=1, check_rows=500)
    assert trie["ids_checked"] == 500 and trie["nodes_per_level"][-1] == 3000
    index = TrieIndex.load(work / "trie.safetensors")
    assert np.array_equal(index.lookup(torch.from_numpy(ids)).numpy(), np.arange(3000))  # every ID, its item
    beam = scale_decode.beam_batch(work, users=16, beam=5, repeats=2)
    assert beam["beam_users"] == 16 and beam["batch_seconds"] > 0 and "random logits" in beam["step_fn"]
    assert beam["backend"] in ("cpp", "reference")
    # The check the beam stage runs fails on wrong answers.
    good = np.arange(40).reshape(8, 5)
    scale_decode.check_items(good, ids, index)
    for bad, message in (
        (np.where(good == 7, 3000, good), "outside"),
        (np.where(good == 7, -1, good), "outside"),
        (np.where(good == 7, 6, good), "twice"),
    ):
        with pytest.raises(AssertionError, match=message):
            scale_decode.check_items(bad, ids, index)
    with pytest.raises(AssertionError, match="map back"):
        scale_decode.check_items(good, ids[::-1].copy(), index)


def test_decoding_stages_run_in_children_and_merge_by_group(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pipeline_row = {"items": 400, "users": 9, "interactions": 99, "stage": "prepare", "status": "ok",
                    "seconds": 1.0, "peak_rss_gb": 0.1}  # fmt: skip
    old_trie = {"items": 400, "stage": "trie", "status": "ok", "seconds": 9.0, "peak_rss_gb": 0.2, "old": True}
    (out / "scale.json").write_text(json.dumps({"rows": [pipeline_row, old_trie]}))
    result = run_scale_benchmark(
        out, [], config=tmp_path / "unused.toml", decode_sizes=[400], merge=True, log=lambda s: None
    )
    rows = result["rows"]
    assert pipeline_row in rows  # the pipeline's row of the same size stays
    assert not any(r.get("old") for r in rows)  # the decoding rows of that size are replaced
    decoding = {r["stage"]: r for r in rows if r["stage"] in DECODE_STAGES}
    assert list(decoding) == list(DECODE_STAGES)
    for stage, r in decoding.items():
        assert r["status"] == "ok", (stage, r.get("detail"))
        assert r["seconds"] > 0 and 0.05 < r["peak_rss_gb"] < 8 and r["operation_seconds"] >= 0
        assert r["command"].startswith("python -m genrec.bench.scale_decode --stage " + stage)
    assert decoding["trie"]["nodes_per_level"][-1] == 400 and decoding["beam"]["beam"] == 20
    assert decoding["encode"]["fit_rows"] == 400 and decoding["encode"]["dim"] == 192
    assert decoding["encode"]["encode_backend"] in ("cpp", "reference")
    saved = json.loads((out / "scale.json").read_text())
    assert [r["stage"] for r in saved["rows"]] == ["prepare", *DECODE_STAGES]  # sorted by size, then stage
    assert (out / "scale.png").stat().st_size > 1000
