"""The evaluator: metrics from a scripted recommender, batching, checks on recommender output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genrec.data import load_prepared, write_prepared
from genrec.eval import RecommenderOutputError, evaluate, load_per_user

# Items 0..5; test targets: user0 -> 3, user1 -> 0, user2 -> 5.
SEQUENCES = [[0, 1, 2, 3], [4, 1, 2, 0], [1, 0, 3, 5]]


@pytest.fixture
def dataset(tmp_path):
    return load_prepared(write_prepared(tmp_path / "d", SEQUENCES, item_ids=range(6)))


class Scripted:
    """Returns fixed lists per user; counts calls; reports an extra statistic."""

    name = "scripted"

    def __init__(self, lists):
        self.lists = {u: np.array(r) for u, r in lists.items()}
        self.calls = []

    def recommend(self, histories, k, users):
        self.calls.append((len(histories), k))
        out = np.full((len(users), k), -1)
        for i, u in enumerate(users):
            row = self.lists[int(u)][:k]
            out[i, : len(row)] = row
        return out

    def extra_metrics(self):
        return {"invalid_rate": 0.25}


LISTS = {0: [3, 1], 1: [1, 0], 2: [2, 4]}


def test_metrics_match_hand_computation(dataset, tmp_path):
    result = evaluate(Scripted(LISTS), dataset, "test", ks=(1, 2), progress=False)
    m = result.metrics
    assert result.per_user["rank"].tolist() == [0, 1, -1]
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5) / 3)
    assert m["coverage@1"] == pytest.approx(3 / 6)  # items 3, 1, 2
    assert m["coverage@2"] == pytest.approx(5 / 6)  # items 0..4
    # training parts [0, 1], [4, 1], [1, 0]: counts item0:2 item1:3 item4:1, others 0
    assert m["avg_popularity@1"] == pytest.approx((0 + 3 + 0) / 3)
    assert m["avg_popularity@2"] == pytest.approx(((0 + 3) / 2 + (3 + 2) / 2 + (0 + 1) / 2) / 3)
    assert result.per_user["avg_popularity@2"].tolist() == [1.5, 2.5, 0.5]
    assert m["invalid_rate"] == 0.25
    assert result.info["mrr_cutoff"] == 2 and result.info["num_users"] == 3


def test_valid_split_uses_second_to_last_item(dataset):
    result = evaluate(Scripted({0: [2], 1: [2], 2: [3]}), dataset, "valid", ks=(1,), progress=False)
    assert result.per_user["target"].tolist() == [2, 2, 3]
    assert result.metrics["recall@1"] == 1.0


def test_history_items_stay_unless_asked(dataset):
    # user 1's history is [4, 1, 2]: with exclusion, 1 and 2 drop out and 0 moves to the top.
    lists = {0: [0, 3, 5], 1: [1, 2, 0, 3], 2: [5, 0, 1]}
    kept = evaluate(Scripted(lists), dataset, "test", ks=(1, 4), progress=False)
    assert kept.per_user["rank"].tolist() == [1, 2, 0]
    rec = Scripted(lists)
    dropped = evaluate(rec, dataset, "test", ks=(1, 4), exclude_history=True, progress=False)
    assert dropped.per_user["rank"].tolist() == [0, 0, 0]
    assert rec.calls == [(3, 6)]  # over-fetched: k + longest history, capped at the catalogue


@settings(max_examples=25)
@given(batch_size=st.integers(1, 5), seed=st.integers(0, 1000))
def test_batching_does_not_change_results(tmp_path_factory, batch_size, seed):
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, 15, size=rng.integers(3, 8)).tolist() for _ in range(11)]
    ds = load_prepared(write_prepared(tmp_path_factory.mktemp("b") / "d", sequences, item_ids=range(15)))
    lists = {u: rng.permutation(15)[: rng.integers(0, 8)].tolist() for u in range(11)}
    whole = evaluate(Scripted(lists), ds, "test", ks=(3, 7), batch_size=100, progress=False)
    parts = evaluate(Scripted(lists), ds, "test", ks=(3, 7), batch_size=batch_size, progress=False)
    assert parts.metrics == whole.metrics
    for key, values in whole.per_user.items():
        np.testing.assert_array_equal(parts.per_user[key], values)
    assert (whole.per_user["rank"] >= -1).all() and not np.isnan(whole.per_user["ndcg@7"]).any()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([3, 3], "item 3 is recommended twice"),
        ([3, 6], "item 6 is outside 0..5"),
        ([-1, 3], "-1 may only pad the end"),
        ([-2, 3], "item -2 is outside"),
    ],
)
def test_bad_recommender_output_is_named(dataset, row, message):
    with pytest.raises(RecommenderOutputError, match=message):
        evaluate(Scripted({0: [0, 1], 1: row, 2: [0, 1]}), dataset, "test", ks=(2,), progress=False)


def test_wrong_shape_and_dtype(dataset):
    class Short:
        def recommend(self, histories, k, users):
            return np.zeros((len(users), k - 1), dtype=np.int64)

    class Floats:
        def recommend(self, histories, k, users):
            return np.zeros((len(users), k))

    with pytest.raises(
        RecommenderOutputError, match=r"Short.recommend returned shape \[3, 1\], expected \[3, 2\]"
    ):
        evaluate(Short(), dataset, ks=(2,), progress=False)
    with pytest.raises(RecommenderOutputError, match="must be integers"):
        evaluate(Floats(), dataset, ks=(2,), progress=False)


def test_save_writes_json_and_per_user_arrays(dataset, tmp_path):
    out = tmp_path / "res" / "metrics.json"
    result = evaluate(Scripted(LISTS), dataset, "test", ks=(1, 2), output=out, progress=True)
    saved = json.loads(out.read_text())
    assert saved["metrics"] == result.metrics
    assert saved["split"] == "test" and saved["recommender"] == "scripted"
    assert saved["dataset_fingerprint"] == dataset.fingerprint
    per_user = load_per_user(out)
    assert per_user["rank"].tolist() == [0, 1, -1]
    assert per_user["recall@2"].tolist() == [1.0, 1.0, 0.0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.json", "metrics.per_user.parquet"]


def test_nan_metrics_become_null_in_json(dataset, tmp_path):
    empty = Scripted({0: [], 1: [], 2: []})
    result = evaluate(empty, dataset, ks=(2,), output=tmp_path / "m.json", progress=False)
    assert math.isnan(result.metrics["novelty@2"])
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["novelty@2"] is None
