"""Content-KNN: a float64 brute-force reference, the tie rule, history exclusion, tuning, the CLI."""

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
from genrec.data.cold_start import write_cold_start
from genrec.embed.artifacts import EmbeddingError, item_ids_sha256, write_embeddings
from genrec.eval import ContentKNN, ContentKNNConfig, evaluate, load_per_user, make_baseline
from genrec.eval.content_knn import content_knn_grid, load_item_embeddings, top_k_by_score, tune_content_knn


def reference_scores(embeddings, history, n, decay) -> np.ndarray:
    """The definition in float64, one user at a time."""
    e = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    unit = e / np.where(norms > 0, norms, 1)
    q = np.zeros(e.shape[1])
    for age, item in enumerate(list(history)[::-1][:n]):
        q += decay**age * unit[item]
    if np.linalg.norm(q) > 0:
        q /= np.linalg.norm(q)
    return unit @ q


def reference_ranking(scores: np.ndarray, k: int, exclude=()) -> list[int]:
    """Items by score descending, then index ascending; ``exclude`` left out; -1 padded to k."""
    items = [i for i in range(len(scores)) if i not in set(exclude)]
    ranked = sorted(items, key=lambda i: (-scores[i], i))
    return (ranked + [-1] * k)[:k]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 6),
    decay=st.sampled_from([1.0, 0.8, 0.5, 0.25]),
    k=st.integers(1, 15),
    batch_size=st.integers(1, 5),
)
def test_matches_float64_reference(data, n, decay, k, batch_size):
    num_items = data.draw(st.integers(1, 12))
    dim = data.draw(st.integers(1, 5))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(num_items, dim)).astype(np.float32)
    if data.draw(st.booleans()):  # some exact duplicates and a zero row
        emb[rng.integers(num_items, size=num_items // 2)] = emb[0]
        emb[-1] = 0
    hists = data.draw(st.lists(st.lists(st.integers(0, num_items - 1), max_size=8), min_size=1, max_size=7))
    histories = [np.array(h, dtype=np.int64) for h in hists]
    model = ContentKNN(emb, ContentKNNConfig(n, decay), batch_size=batch_size)
    got = model.recommend(histories, k, np.arange(len(histories)))
    assert got.dtype == np.int64 and got.shape == (len(histories), k)
    for h, row in zip(hists, got, strict=True):
        s = reference_scores(emb, h, n, decay)
        want = reference_ranking(s, k)
        assert [i for i in row if i >= 0] == [i for i in want if i >= 0] or _same_up_to_rounding(s, row, want)


def _same_up_to_rounding(s: np.ndarray, got, want, tol: float = 1e-5) -> bool:
    """float32 vs float64: the lists may differ only where reference scores are within ``tol``."""
    got, want = np.asarray(got), np.asarray(want)
    if (got < 0).sum() != (want < 0).sum():
        return False
    got, want = got[got >= 0], want[want >= 0]
    return bool(np.allclose(s[got], s[want], atol=tol)) and len(set(got.tolist())) == len(got)


def test_well_separated_scores_match_exactly():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    histories = [rng.integers(300, size=int(rng.integers(1, 30))) for _ in range(64)]
    for cfg in (ContentKNNConfig(1, 1.0), ContentKNNConfig(5, 0.6), ContentKNNConfig(20, 0.8)):
        got = ContentKNN(emb, cfg, batch_size=7).recommend(histories, 25, np.arange(64))
        checked = 0
        for h, row in zip(histories, got, strict=True):
            s = reference_scores(emb, h, cfg.history, cfg.decay)
            top = np.sort(s)[::-1][:26]
            if np.min(-np.diff(top)) > 1e-5:  # no near-tie in the top 26: the lists must be equal
                assert row.tolist() == reference_ranking(s, 25)
                checked += 1
        assert checked > 40


def test_query_is_recency_weighted_mean_of_last_items():
    emb = np.eye(4, dtype=np.float32) * np.array([[1], [2], [3], [4]], dtype=np.float32)
    model = ContentKNN(emb, ContentKNNConfig(history=2, decay=0.5))
    # History [0, 1, 2]: the last two, newest first: item 2 weighs 1, item 1 weighs 0.5.
    np.testing.assert_allclose(model.queries([np.array([0, 1, 2])]), [[0, 0.5 / 1.25**0.5, 1 / 1.25**0.5, 0]])
    np.testing.assert_allclose(model.queries([np.array([], dtype=np.int64)]), [[0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"history row 0: item indices must be in 0\.\.3"):
        model.queries([np.array([4])])


def test_tie_rule_smaller_index_first():
    # Items 1, 3, 6 share one embedding; 0 and 5 another; item 2 is the query's own direction.
    base = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    emb = base[[2, 1, 0, 1, 2, 2, 1, 2]] * np.array([[1], [1], [1], [2], [3], [1], [0.5], [1]], np.float32)
    model = ContentKNN(emb, ContentKNNConfig(1))
    # Query = item 2's direction: cosine 1 for item 2, 0.6 for 1, 3, 6, then 0 for the rest.
    assert model.recommend([np.array([2])], 6, np.zeros(1)).tolist() == [[2, 1, 3, 6, 0, 4]]
    assert model.recommend([np.array([2])], 3, np.zeros(1)).tolist() == [[2, 1, 3]]
    assert model.recommend([np.array([2])], 10, np.zeros(1)).tolist() == [[2, 1, 3, 6, 0, 4, 5, 7, -1, -1]]
    # No history: every score is 0, so the list is the items in index order.
    assert model.recommend([np.array([], np.int64)], 4, np.zeros(1)).tolist() == [[0, 1, 2, 3]]


def test_top_k_by_score_exact_at_the_cut():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5], [1, 1, 1, 1, 1]], dtype=np.float32)
    assert top_k_by_score(scores, 2).tolist() == [[1, 0], [0, 1]]
    assert top_k_by_score(scores, 4).tolist() == [[1, 0, 2, 4], [0, 1, 2, 3]]
    assert top_k_by_score(scores[:0], 3).shape == (0, 3)


def _dataset_with_embeddings(tmp_path: Path, sequences, emb: np.ndarray, name="toy", **meta):
    ds_path = write_prepared(tmp_path / name, sequences, item_ids=range(len(emb)), name=name)
    ds = load_prepared(ds_path)
    ids = ds.item_table(columns=["item_id"]).column("item_id").to_pylist()
    fields = {
        "encoder": "text",
        "item_ids_sha256": item_ids_sha256(ids),
        "dataset_manifest_sha256": ds.fingerprint,
    }
    emb_path = write_embeddings(tmp_path / f"{name}-emb", emb, {**fields, **meta})
    return ds, emb_path


def test_exclude_history_ranks_the_rest_of_the_catalogue(tmp_path):
    rng = np.random.default_rng(0)
    num_items = 40
    emb = rng.normal(size=(num_items, 6)).astype(np.float32)
    sequences = [rng.integers(num_items, size=int(rng.integers(3, 25))).tolist() for _ in range(50)]
    ds, emb_path = _dataset_with_embeddings(tmp_path, sequences, emb)
    model = make_baseline("content-knn", ds, embeddings=emb_path, history=1)
    result = evaluate(model, ds, "test", ks=(5, 10), exclude_history=True, batch_size=8, progress=False)
    split = ds.split("test")
    for r, (h, target) in enumerate(zip(split.history_list(), split.targets, strict=True)):
        s = reference_scores(emb, h, 1, 1.0)
        want = reference_ranking(s, 10, exclude=h)
        rank = want.index(target) if target in want else -1
        assert result.per_user["rank"][r] == rank, r
    # History kept: the last item (cosine 1) leads every list, as the definition says.
    kept = model.recommend(split.history_list(), 1, split.users)
    assert kept[:, 0].tolist() == [h[-1] for h in split.history_list()]


def test_tuning_picks_the_known_best_setting(tmp_path):
    # User u: topics A_u, B_u, C_u (orthogonal). Validation history [A, B], target r = A + B, and a
    # decoy d = B + 0.05 C. Only the plain mean of the last two items ranks r first.
    users = 6
    emb, sequences = [], []
    for u in range(users):
        a, b, c = (np.eye(3 * users, dtype=np.float32)[3 * u + j] for j in range(3))
        base = len(emb)
        emb += [a, b, a + b, b + 0.05 * c]
        sequences.append([base, base + 1, base + 2, base + 3])
    ds, emb_path = _dataset_with_embeddings(tmp_path, sequences, np.stack(emb))
    model = ContentKNN.from_dataset(ds, emb_path)
    grid = [
        ContentKNNConfig(1, 1.0),
        ContentKNNConfig(2, 0.4),
        ContentKNNConfig(2, 1.0),
        ContentKNNConfig(3, 1.0),
    ]
    best, table = tune_content_knn(model, ds, grid, exclude_history=True)
    assert best == ContentKNNConfig(2, 1.0)  # (3, 1.0) ties with it (two history items) and comes later
    assert [row["history"] for row in table] == [1, 2, 2, 3]
    assert table[2]["ndcg@10"] == pytest.approx(1.0) and table[3]["ndcg@10"] == pytest.approx(1.0)
    # One item (B): the decoy first, r second (NDCG 1/log2(3)); with the history kept, B itself
    # leads and r is third (1/log2(4)): tuning scores the lists the test will score.
    assert table[0]["ndcg@10"] == pytest.approx(1 / np.log2(3)) and table[1]["ndcg@10"] < 1
    _, kept = tune_content_knn(model, ds, grid[:1], exclude_history=False)
    assert kept[0]["ndcg@10"] == pytest.approx(0.5)


def test_grid_is_distinct_and_simple_first():
    grid = content_knn_grid()
    assert len(set(grid)) == len(grid) == 26
    assert grid[0] == ContentKNNConfig(1, 1.0) and grid[1] == ContentKNNConfig(2, 1.0)
    with pytest.raises(ValueError, match="history must be an integer >= 1"):
        ContentKNNConfig(history=0)
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\]"):
        ContentKNNConfig(decay=1.5)


def test_loading_checks_rows_items_and_origin(tmp_path):
    emb = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    sequences = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    ds, emb_path = _dataset_with_embeddings(tmp_path, sequences, emb)
    array, meta = load_item_embeddings(emb_path / "embeddings.npy", ds)  # the file: embed.json is read
    assert array.shape == (10, 4) and meta["encoder"] == "text"
    bare = tmp_path / "bare.npy"
    np.save(bare, emb)
    assert load_item_embeddings(bare, ds)[1] == {}
    with pytest.raises(EmbeddingError, match=r"short\.npy: 9 rows of embeddings for 10 items"):
        np.save(tmp_path / "short.npy", emb[:9])
        load_item_embeddings(tmp_path / "short.npy", ds)
    write_embeddings(tmp_path / "other", emb, {"encoder": "text", "item_ids_sha256": "0" * 64})
    with pytest.raises(EmbeddingError, match="items differ from this one"):
        load_item_embeddings(tmp_path / "other", ds)
    # An encoder that learns from interactions must come from this very dataset.
    write_embeddings(tmp_path / "mm", emb, {"encoder": "multimodal", "dataset_manifest_sha256": "f" * 64})
    with pytest.raises(
        EmbeddingError, match=r"mm/embed\.json: encoder 'multimodal' learns from interactions"
    ):
        load_item_embeddings(tmp_path / "mm", ds)
    write_embeddings(
        tmp_path / "mm", emb, {"encoder": "multimodal", "dataset_manifest_sha256": ds.fingerprint}
    )
    assert load_item_embeddings(tmp_path / "mm", ds)[0].shape == (10, 4)
    with pytest.raises(ValueError, match="content-knn needs embeddings="):
        make_baseline("content-knn", ds)
    with pytest.raises(ValueError, match="unknown content-knn parameter"):
        make_baseline("content-knn", ds, embeddings=emb_path, window=2)


def _cold_start_toy(tmp_path: Path):
    """40 items on a circle in 2-D; users step 1 or 2 items forward (never back); 10% of items cold."""
    num_items = 40
    angle = 2 * np.pi * np.arange(num_items) / num_items
    emb = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    rng = np.random.default_rng(5)
    sequences = []
    for _ in range(80):
        item = int(rng.integers(num_items))
        seq = [item]
        for _ in range(int(rng.integers(4, 9))):
            item = (item + int(rng.integers(1, 3))) % num_items
            seq.append(item)
        sequences.append(seq)
    base = write_prepared(tmp_path / "toy", sequences, item_ids=range(num_items), name="toy")
    cold = load_prepared(write_cold_start(base, tmp_path / "toy-cold", fraction=0.1))
    ids = cold.item_table(columns=["item_id"]).column("item_id").to_pylist()
    # Text embeddings made on the full dataset serve its cold-start version (content only).
    emb_path = write_embeddings(
        tmp_path / "emb", emb, {"encoder": "text", "item_ids_sha256": item_ids_sha256(ids)}
    )
    return base, cold, emb_path


def test_cli_end_to_end_on_cold_start(tmp_path):
    base, cold, emb_path = _cold_start_toy(tmp_path)
    out = tmp_path / "res" / "knn.json"
    runner = CliRunner()
    args = ["eval", "--model", "content-knn", "--embeddings", str(emb_path), "--data", str(cold.path)]
    result = runner.invoke(app, [*args, "--tune", "--exclude-history", "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["recommender"] == "content-knn" and saved["exclude_history"] is True
    chosen = saved["selection"]["chosen"]
    assert saved["selection"]["exclude_history"] is True and len(saved["selection"]["variants"]) == 26
    assert saved["recommender_config"]["history"] == chosen["history"]
    assert saved["recommender_config"]["encoder"] == "text"
    for group in ("cold_target", "warm_target"):
        assert saved["metrics"][f"{group}/users"] > 0 and f"{group}/recall@10" in saved["metrics"]
    per_user = load_per_user(out)
    assert len(per_user["rank"]) == saved["num_users"] and "cold_target" in per_user
    # The same numbers as the Python API with the chosen setting.
    model = ContentKNN.from_dataset(cold, emb_path, ContentKNNConfig(**chosen))
    direct = evaluate(model, cold, "test", exclude_history=True, progress=False)
    for key in ("recall@10", "ndcg@10", "cold_target/recall@10", "warm_target/ndcg@10"):
        assert saved["metrics"][key] == pytest.approx(direct.metrics[key], rel=1e-12), key
    np.testing.assert_array_equal(per_user["rank"], direct.per_user["rank"])
    # On a circle the nearest item is a neighbour: content-KNN finds cold targets too.
    assert saved["metrics"]["cold_target/recall@10"] > 0.5
    # genrec report pairs it with another baseline scored on the same rows.
    pop = tmp_path / "res" / "pop.json"
    assert (
        runner.invoke(
            app, ["eval", "--model", "mostpop", "--data", str(cold.path), "--output", str(pop)]
        ).exit_code
        == 0
    )
    report = runner.invoke(app, ["report", str(out), str(pop), "--out", str(tmp_path / "rep"), "--no-plots"])
    assert report.exit_code == 0, report.output
    assert "content-knn" in (tmp_path / "rep" / "report.md").read_text()
    # With --param instead of --tune, on the base dataset (no cold items: no cold-target keys).
    plain_args = [
        "--embeddings",
        str(emb_path / "embeddings.npy"),
        "--param",
        "history=2",
        "--param",
        "decay=1",
    ]
    plain_out = tmp_path / "plain.json"
    plain = runner.invoke(
        app, ["eval", "--model", "content-knn", "--data", str(base), *plain_args, "--output", str(plain_out)]
    )
    assert plain.exit_code == 0, plain.output
    plain_saved = json.loads(plain_out.read_text())
    assert (
        plain_saved["recommender_config"]["decay"] == 1.0
        and "cold_target/users" not in plain_saved["metrics"]
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--model content-knn needs --embeddings"),
        (["--embeddings", "{emb}", "--param", "window=3"], "--param (content-knn): unknown key 'window'"),
        (["--embeddings", "{emb}", "--param", "decay=2"], "decay must be in (0, 1]"),
        (["--embeddings", "{emb}", "--param", "history=2.5"], "--param (content-knn): history must be int, got 2.5"),
        (["--embeddings", "{emb}", "--tune", "--param", "history=2"], "--tune applies to"),
        (["--embeddings", "{short}"], "short.npy: 39 rows of embeddings for 40 items"),
        (["--embeddings", "{missing}"], "no-such-folder: no such file"),
    ],
)
def test_cli_errors_write_nothing(tmp_path, extra, message):
    _, cold, emb_path = _cold_start_toy(tmp_path)
    np.save(tmp_path / "short.npy", np.ones((39, 2), np.float32))
    paths = {
        "emb": str(emb_path),
        "short": str(tmp_path / "short.npy"),
        "missing": str(tmp_path / "no-such-folder"),
    }
    out = tmp_path / "out" / "knn.json"
    args = ["eval", "--model", "content-knn", "--data", str(cold.path), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, *(a.format(**paths) for a in extra)])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()), result.output
    assert not out.parent.exists()


def test_cli_embeddings_only_for_content_knn(tmp_path):
    _, cold, emb_path = _cold_start_toy(tmp_path)
    args = ["eval", "--model", "mostpop", "--data", str(cold.path), "--embeddings", str(emb_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "--embeddings applies to --model content-knn" in result.output
