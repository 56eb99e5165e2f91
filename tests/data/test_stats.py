"""`genrec data stats`: every figure on a dataset small enough to count by hand."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data import load_prepared, write_prepared
from genrec.data.stats import dataset_stats, histogram

# Item 0 appears 5 times, item 1 three, item 2 twice, items 3 and 9 once; users 1 and 2 repeat item 0.
SEQUENCES = [[0, 1, 2], [0, 1, 0, 3], [2, 0, 1, 0, 9]]


def test_stats_by_hand(tmp_path):
    ds = load_prepared(write_prepared(tmp_path / "d", SEQUENCES, item_ids=[0, 1, 2, 3, 9]))
    s = dataset_stats(ds)
    assert (s["num_users"], s["num_items"], s["num_interactions"]) == (3, 5, 12)
    assert s["density"] == pytest.approx(12 / 15)
    assert s["sequence_length"]["min"] == 3 and s["sequence_length"]["max"] == 5
    assert s["sequence_length"]["mean"] == pytest.approx(4) and s["sequence_length"]["p50"] == 4
    assert s["item_interactions"]["max"] == 5 and s["item_interactions"]["min"] == 1
    assert s["repeat_interactions"] == 2  # users 1 and 2 each see item 0 a second time
    pop = s["item_popularity"]
    assert pop["share_top_1pct_items"] == pytest.approx(5 / 12)  # the top 1% is at least one item
    assert pop["items_with_fewer_than_5"] == 4
    # training parts [0], [0, 1], [2, 0, 1]: items 3 and 9 never seen in training
    assert pop["items_unseen_in_training"] == 2
    # counts sorted [1, 1, 2, 3, 5]: sum (2i - n - 1) x_i / (n * total)
    assert pop["gini"] == pytest.approx(((-4) * 1 + (-2) * 1 + 0 * 2 + 2 * 3 + 4 * 5) / (5 * 12))
    assert [row["count"] for row in s["sequence_length_histogram"]][:2] == [2, 1]  # lengths 3, 4 | 5


def test_histogram_buckets():
    assert histogram([3, 4, 5, 12, 250], (3, 5, 10, 200)) == [
        {"range": "3-4", "count": 2},
        {"range": "5-9", "count": 1},
        {"range": "10-199", "count": 1},
        {"range": ">=200", "count": 1},
    ]


def test_cli_stats_tables_and_json(tmp_path):
    out = write_prepared(tmp_path / "d", SEQUENCES)
    table = CliRunner().invoke(app, ["data", "stats", str(out)])
    assert table.exit_code == 0, table.output
    assert "num_interactions" in table.output and "sequence length" in table.output and "gini" in table.output
    as_json = CliRunner().invoke(app, ["data", "stats", str(out), "--json"])
    assert json.loads(as_json.output)["num_interactions"] == 12
    missing = CliRunner().invoke(app, ["data", "stats", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "not a prepared dataset" in missing.output


def test_cold_item_shares_against_a_loop(tmp_path):
    import numpy as np

    from genrec.data import write_cold_start

    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(0, 30, size=int(rng.integers(3, 9)))) for _ in range(150)]
    plain = write_prepared(tmp_path / "d", sequences, item_ids=range(30))
    ds = load_prepared(write_cold_start(plain, tmp_path / "cold", fraction=0.2, seed=1))
    s = dataset_stats(ds)["cold_items"]
    cold = set(ds.cold_items().tolist())
    assert s["num_cold_items"] == 6
    for name in ("valid", "test"):
        split = ds.split(name)
        histories = split.history_list()
        expected = {
            "rows": len(histories),
            "cold_target": np.mean([t in cold for t in split.targets]),
            "history_holds_cold_item": np.mean([any(i in cold for i in h) for h in histories]),
            "history_ends_with_cold_item": np.mean([len(h) > 0 and h[-1] in cold for h in histories]),
        }
        assert s[name] == pytest.approx(expected)
    assert s["valid"]["history_holds_cold_item"] == 0 < s["test"]["history_ends_with_cold_item"]
    assert "cold_items" not in dataset_stats(load_prepared(plain))
    table = CliRunner().invoke(app, ["data", "stats", str(ds.path)])
    assert table.exit_code == 0 and "history ends with one" in table.output
