"""MostPop and the co-occurrence baseline: hand cases, a plain-Python reference, the CLI, Beauty."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import load_prepared, write_prepared
from genrec.eval import CoOccurrence, CoOccurrenceConfig, MostPop, evaluate, make_baseline
from genrec.eval.baselines import cooccurrence_grid, popularity_priority, tune_cooccurrence

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "baselines"


def test_mostpop_counts_training_only_and_breaks_ties_by_index(tmp_path):
    # Item 9 is everyone's valid and test item: popular overall, absent from training.
    sequences = [[2, 1, 9, 9], [1, 2, 9, 9], [3, 0, 9, 9], [0, 3, 9, 9], [4, 5, 9, 9]]
    ds = load_prepared(write_prepared(tmp_path / "d", sequences, item_ids=range(10)))
    assert ds.train_item_counts().tolist() == [2, 2, 2, 2, 1, 1, 0, 0, 0, 0]
    model = MostPop.from_dataset(ds)
    recs = model.recommend([np.array([0])] * 2, 7, np.array([0, 1]))
    assert recs.tolist() == [[0, 1, 2, 3, 4, 5, 6]] * 2
    assert model.recommend([np.array([0])], 12, np.array([0]))[0].tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        -1,
        -1,
    ]
    assert evaluate(model, ds, "test", ks=(5,), progress=False).metrics["recall@5"] == 0


def test_popularity_priority_ties_to_smaller_index():
    assert popularity_priority(np.array([1, 3, 3, 0, 1])).tolist() == [2, 0, 1, 4, 3]


def test_cooccurrence_hand_case():
    # Training sequences; transitions (window 1, directed): 0->1 twice, 1->2, 0->2, 2->0.
    sequences = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 2, 0])]
    counts = np.array([4, 2, 2, 0])
    cfg = CoOccurrenceConfig(
        window=1, directed=True, distance_decay=1.0, source_norm=1.0, history=2, recency=0.5
    )
    model = CoOccurrence(sequences, 4, counts, cfg)
    # Row of item 0 normalised by its count 4: to 1 -> 2/4, to 2 -> 1/4.
    np.testing.assert_allclose(model.scores([np.array([0])]), [[0, 0.5, 0.25, 0]])
    # History [2, 1]: the last item 1 votes 2 with 1/2; item 2 (weight 0.5) votes 0 with 1/2 * 0.5.
    np.testing.assert_allclose(model.scores([np.array([2, 1])]), [[0.25, 0, 0.5, 0]])
    recs = model.recommend([np.array([2, 1]), np.array([3])], 4, np.array([0, 1]))
    # Row 0: voted 2, 0; then popularity fill (0, 1, 2, 3 by counts, ties by index) skips them.
    # Row 1: item 3 never occurs in training, so popularity order only.
    assert recs.tolist() == [[2, 0, 1, 3], [0, 1, 2, 3]]


def reference_cooccurrence(sequences, num_items, counts, cfg, histories, k):
    """The definition in plain Python: pair weights, normalisation, recency-weighted votes, sort."""
    raw = {}
    for d in range(1, cfg.window + 1):
        pairs = [(s[p], s[p + d]) for s in sequences for p in range(len(s) - d)]
        if not cfg.directed:
            pairs += [(b, a) for a, b in pairs]
        for a, b in pairs:
            if a != b:
                raw[a, b] = raw.get((a, b), 0.0) + cfg.distance_decay ** (d - 1)
    c = np.maximum(counts, 1).astype(float)
    weight = {(a, b): v / c[a] ** cfg.source_norm / c[b] ** cfg.target_norm for (a, b), v in raw.items()}
    priority = popularity_priority(counts)
    out = []
    for h in histories:
        score = [0.0] * num_items
        for j, a in enumerate(list(h[::-1])[: cfg.history]):
            for b in range(num_items):
                if (a, b) in weight:
                    score[b] += cfg.recency**j * weight[a, b]
        ranked = sorted(range(num_items), key=lambda i: (-score[i], priority[i]))
        out.append((ranked + [-1] * k)[:k])
    return out


@settings(max_examples=40)
@given(
    data=st.data(),
    window=st.integers(1, 4),
    directed=st.booleans(),
    decay=st.sampled_from([1.0, 0.5]),
    source_norm=st.sampled_from([0.0, 1.0]),
    target_norm=st.sampled_from([0.0, 0.5]),
    history=st.integers(1, 4),
    recency=st.sampled_from([1.0, 0.5]),
    k=st.integers(1, 14),
)
def test_cooccurrence_matches_reference(
    data, window, directed, decay, source_norm, target_norm, history, recency, k
):
    n = data.draw(st.integers(2, 12))
    seqs = data.draw(st.lists(st.lists(st.integers(0, n - 1), max_size=8), min_size=1, max_size=8))
    hists = data.draw(st.lists(st.lists(st.integers(0, n - 1), max_size=6), min_size=1, max_size=6))
    sequences = [np.array(s, dtype=np.int64) for s in seqs]
    histories = [np.array(h, dtype=np.int64) for h in hists]
    counts = (
        np.bincount(np.concatenate(sequences), minlength=n) if any(len(s) for s in seqs) else np.zeros(n, int)
    )
    cfg = CoOccurrenceConfig(window, directed, decay, source_norm, target_norm, history, recency)
    model = CoOccurrence(sequences, n, counts, cfg, batch_size=data.draw(st.integers(1, 4)))
    got = model.recommend(histories, k, np.arange(len(histories)))
    assert got.tolist() == reference_cooccurrence(seqs, n, counts, cfg, hists, k)


def test_make_baseline_and_grid(tmp_path):
    ds = load_prepared(write_prepared(tmp_path / "d", [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1]]))
    assert make_baseline("cooccurrence", ds, window=2).config()["window"] == 2
    with pytest.raises(ValueError, match="unknown cooccurrence parameter"):
        make_baseline("cooccurrence", ds, windows=2)
    with pytest.raises(ValueError, match="mostpop takes no parameters"):
        make_baseline("mostpop", ds, window=2)
    with pytest.raises(ValueError, match="unknown baseline"):
        make_baseline("sasrec", ds)
    with pytest.raises(ValueError, match="window and history must be >= 1"):
        CoOccurrenceConfig(window=0)
    grid = cooccurrence_grid()
    assert len(set(grid)) == len(grid) >= 12
    best, table = tune_cooccurrence(ds, grid[:3])
    assert best in grid[:3] and len(table) == 3 and all("ndcg@10" in row for row in table)


def test_cli_eval_prints_and_writes(tmp_path):
    ds = write_prepared(tmp_path / "d", [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [0, 2, 1, 3]])
    out = tmp_path / "m.json"
    runner = CliRunner()
    args = ["eval", "--model", "mostpop", "--data", str(ds), "--split", "test", "--output", str(out)]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "recall" in result.output and "ndcg" in result.output and "mrr=" in result.output
    saved = json.loads(out.read_text())
    assert (
        saved["recommender"] == "mostpop"
        and "recall@10" in saved["metrics"]
        and "coverage@10" in saved["metrics"]
    )
    co = runner.invoke(
        app, ["eval", "--model", "cooccurrence", "--data", str(ds), "--param", "window=2", "--k", "2"]
    )
    assert co.exit_code == 0, co.output
    tuned = runner.invoke(
        app,
        [
            "eval",
            "--model",
            "cooccurrence",
            "--data",
            str(ds),
            "--tune",
            "--output",
            str(out),
            "--no-per-user",
        ],
    )
    assert tuned.exit_code == 0, tuned.output
    assert json.loads(out.read_text())["selection"]["split"] == "valid"
    bad = runner.invoke(app, ["eval", "--model", "nope", "--data", str(ds)])
    assert bad.exit_code == 1 and "unknown model" in bad.output
    missing = runner.invoke(app, ["eval", "--model", "mostpop", "--data", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "not a prepared dataset" in missing.output


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mostpop", "cooccurrence"])
def test_beauty_baselines_reproduce_committed_results(prepared_beauty, model):
    """The numbers in bench/results/baselines (and the README) come out of the current code."""
    committed = json.loads((RESULTS / f"beauty_{model}_test.json").read_text())
    ds = load_prepared(prepared_beauty)
    params = committed["recommender_config"] if model == "cooccurrence" else {}
    recommender = make_baseline(model, ds, **params)
    result = evaluate(recommender, ds, "test", ks=committed["ks"], progress=False)
    for key, value in committed["metrics"].items():
        assert result.metrics[key] == pytest.approx(value, rel=1e-9), key


def _one_shot_pairs(src, dst, w, n):
    """The pair sums before they were taken a source range at a time: one np.unique over all pairs."""
    key = src.astype(np.int64) * n + dst
    uniq, inverse = np.unique(key, return_inverse=True)
    return uniq // n, uniq % n, np.bincount(inverse, weights=w)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    pairs=st.integers(0, 300),
    per_pass=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_pair_sums_taken_by_source_range_are_the_one_shot_sums_to_the_bit(n, pairs, per_pass, seed):
    from genrec.eval.baselines import _sum_pairs

    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, pairs).astype(np.int32)
    dst = rng.integers(0, n, pairs).astype(np.int32)
    weights = np.array([1.0, 0.7, 0.49, 1e-3])  # non-dyadic: a different summation order would show
    kind = rng.integers(0, 4, pairs).astype(np.uint8)
    got = _sum_pairs(src, dst, kind, weights, n, per_pass=per_pass)
    want = _one_shot_pairs(src, dst, weights[kind], n)
    for g, e in zip(got, want, strict=True):
        assert (g.dtype == e.dtype or not len(g)) and np.array_equal(g, e)  # (an empty bincount is int64)


def _old_pair_matrix(sequences, n, counts, cfg):
    """CoOccurrence._build before it went by source ranges: every pair's float64 weight, one np.unique."""
    flat = np.concatenate([np.asarray(s, np.int64) for s in sequences])
    user_of = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    src, dst, w = [], [], []
    for d in range(1, cfg.window + 1):
        same = user_of[:-d] == user_of[d:] if len(flat) > d else np.zeros(0, bool)
        a, b = flat[:-d][same], flat[d:][same]
        weight = np.full(len(a), cfg.distance_decay ** (d - 1))
        src.append(a), dst.append(b), w.append(weight)
        if not cfg.directed:
            src.append(b), dst.append(a), w.append(weight)
    src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
    keep = src != dst
    rows, cols, values = _one_shot_pairs(src[keep], dst[keep], w[keep], n)
    c = np.maximum(counts, 1).astype(np.float64)
    values = values / c[rows] ** cfg.source_norm / c[cols] ** cfg.target_norm
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols, values


@settings(max_examples=30, deadline=None)
@given(data=st.data(), window=st.integers(1, 5), directed=st.booleans(), per_pass=st.integers(1, 50))
def test_the_pair_matrix_is_the_one_shot_one_to_the_bit(data, window, directed, per_pass):
    from genrec.eval import baselines

    n = data.draw(st.integers(2, 15))
    seqs = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=12), min_size=1, max_size=10)
    )
    sequences = [np.array(s, dtype=np.int64) for s in seqs]
    counts = np.bincount(np.concatenate(sequences), minlength=n)
    cfg = CoOccurrenceConfig(window, directed, 0.7, 1.0, 0.5)  # 0.7: sums that depend on their order
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(baselines, "PAIRS_PER_PASS", per_pass)
        model = CoOccurrence(sequences, n, counts, cfg)
    for got, want in zip(
        (model.indptr, model.indices, model.values), _old_pair_matrix(sequences, n, counts, cfg), strict=True
    ):
        assert got.dtype == want.dtype and np.array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), cap=st.integers(1, 6))
def test_each_item_keeps_its_strongest_neighbours_in_index_order(data, cap):
    n = data.draw(st.integers(2, 10))
    seqs = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=12), min_size=1, max_size=10)
    )
    sequences = [np.array(s, dtype=np.int64) for s in seqs]
    counts = np.bincount(np.concatenate(sequences), minlength=n)
    base = dict(window=4, directed=False, distance_decay=0.5, source_norm=1.0, target_norm=0.5)
    full = CoOccurrence(sequences, n, counts, CoOccurrenceConfig(**base, max_neighbours=0))
    capped = CoOccurrence(sequences, n, counts, CoOccurrenceConfig(**base, max_neighbours=cap))
    for r in range(n):
        cols = full.indices[full.indptr[r] : full.indptr[r + 1]]
        vals = full.values[full.indptr[r] : full.indptr[r + 1]]
        best = sorted(range(len(cols)), key=lambda i: (-vals[i], cols[i]))[:cap]  # ties: the lower item
        want = sorted(best, key=lambda i: cols[i])
        lo, hi = capped.indptr[r], capped.indptr[r + 1]
        assert capped.indices[lo:hi].tolist() == [int(cols[i]) for i in want]
        assert capped.values[lo:hi].tolist() == [float(vals[i]) for i in want]
    with pytest.raises(ValueError, match="max_neighbours"):
        CoOccurrenceConfig(max_neighbours=-1)
