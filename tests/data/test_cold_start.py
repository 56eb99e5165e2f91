"""The cold-start protocol: seeded cold items, no training interaction with them, targets kept, metrics apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genrec.data import (
    ColdStart,
    PreparedDatasetError,
    load_prepared,
    select_cold_items,
    write_cold_start,
    write_prepared,
)
from genrec.data.errors import DataError
from genrec.eval import evaluate


def _random_sequences(num_users: int, num_items: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, num_items, size=int(rng.integers(4, 12)))) for _ in range(num_users)]


@pytest.fixture
def source(tmp_path):
    sequences = _random_sequences(200, 60, seed=1)
    items = {"item_id": list(range(60)), "title": [f"item {i}" for i in range(60)]}
    return load_prepared(write_prepared(tmp_path / "src", sequences, item_ids=range(60), items=items))


def test_selection_is_seeded_sized_and_stable():
    cold = select_cold_items(1000, 0.1, seed=0)
    assert len(cold) == 100 and np.all(np.diff(cold) > 0) and cold.dtype == np.int64
    assert np.array_equal(cold, select_cold_items(1000, 0.1, seed=0))
    assert not np.array_equal(cold, select_cold_items(1000, 0.1, seed=1))
    assert len(select_cold_items(7, 0.01)) == 1  # a positive fraction always withholds an item
    # A fixed hash, not numpy's generator: these indices may never change (saved datasets depend on them).
    assert select_cold_items(20, 0.1, seed=0).tolist() == [1, 18]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            select_cold_items(100, bad)


def test_cold_items_lose_every_training_interaction_and_stay_targets(source, tmp_path):
    derived = load_prepared(write_cold_start(source, tmp_path / "cold", fraction=0.2, seed=3))
    cold = derived.cold_items()
    assert np.array_equal(cold, select_cold_items(60, 0.2, seed=3))
    assert derived.num_items == source.num_items  # the catalogue (and so the trie) keeps every item
    assert derived.item_table().equals(source.item_table())
    assert derived.train_item_counts()[cold].sum() == 0
    assert source.train_item_counts()[cold].sum() > 0

    # Every kept user: the same validation/test targets, a training part = the source's minus cold items.
    kept_ids = derived.user_table().column("user_id").to_pylist()
    src_index = {u: i for i, u in enumerate(source.user_table().column("user_id").to_pylist())}
    src_valid, src_test = source.split("valid"), source.split("test")
    dst_valid, dst_test = derived.split("valid"), derived.split("test")
    cold_set = set(cold.tolist())
    for new, user_id in enumerate(kept_ids):
        old = src_index[user_id]
        assert dst_valid.targets[new] == src_valid.targets[old]
        assert dst_test.targets[new] == src_test.targets[old]
        expected = [i for i in src_valid.history(old).tolist() if i not in cold_set]
        assert dst_valid.history(new).tolist() == expected
        assert dst_test.history(new).tolist() == [*expected, int(src_valid.targets[old])]
    assert np.isin(dst_test.targets, cold).any()  # cold items are still asked for

    # Users whose whole training part was cold have no history left: dropped and counted.
    dropped = derived.manifest["split"]["users_dropped"]
    assert dropped == source.num_users - derived.num_users
    assert derived.manifest["cold_start"]["source_fingerprint"] == source.fingerprint


def test_users_with_only_cold_training_items_are_dropped(tmp_path):
    cold = select_cold_items(10, 0.3, seed=0)
    warm = [i for i in range(10) if i not in set(cold.tolist())]
    sequences = [
        [int(cold[0]), int(cold[1]), warm[0], warm[1]],
        [warm[0], warm[1], warm[2], warm[3], warm[4]],
    ]
    source = write_prepared(tmp_path / "src", sequences, item_ids=range(10))
    derived = load_prepared(write_cold_start(source, tmp_path / "cold", fraction=0.3, seed=0))
    assert derived.num_users == 1 and derived.manifest["split"]["users_dropped"] == 1
    assert derived.sequence(0).tolist() == sequences[1]


def test_manifest_that_does_not_match_the_selection_is_refused(source, tmp_path):
    path = write_cold_start(source, tmp_path / "cold")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["split"]["cold_seed"] = 7  # another seed selects other items than the sha256 recorded
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PreparedDatasetError, match="cold_items_sha256"):
        load_prepared(path)


def test_derivation_errors_are_clear(source, tmp_path):
    with pytest.raises(DataError, match="another folder"):
        write_cold_start(source, source.path)
    path = write_cold_start(source, tmp_path / "cold")
    with pytest.raises(DataError, match="leave-one-out"):
        write_cold_start(path, tmp_path / "again")
    with pytest.raises(DataError, match="already holds"):
        write_cold_start(source, tmp_path / "cold")


class _Oracle:
    """Recommends the test target to users whose target is cold, an item nobody wants otherwise."""

    def __init__(self, dataset):
        split = dataset.split("test")
        self.targets = dict(zip(split.users.tolist(), split.targets.tolist(), strict=True))
        self.cold = set(dataset.cold_items().tolist())

    def recommend(self, histories, k, users):
        out = np.full((len(users), k), -1)
        for r, u in enumerate(users.tolist()):
            target = self.targets[u]
            out[r, 0] = target if target in self.cold else (target + 1) % 60
        return out


def test_evaluator_reports_cold_target_users_apart(source, tmp_path):
    derived = load_prepared(write_cold_start(source, tmp_path / "cold", fraction=0.2, seed=3))
    result = evaluate(_Oracle(derived), derived, "test", ks=(10,), progress=False)
    m = result.metrics
    is_cold = np.isin(derived.split("test").targets, derived.cold_items())
    assert m["cold_target/users"] == is_cold.sum() > 0
    assert m["warm_target/users"] == (~is_cold).sum()
    assert m["cold_target/recall@10"] == 1.0 and m["cold_target/ndcg@10"] == 1.0
    assert m["warm_target/recall@10"] == 0.0
    assert m["recall@10"] == pytest.approx(is_cold.mean())
    assert np.array_equal(result.per_user["cold_target"], is_cold)
    plain = evaluate(_Oracle(derived), source, "test", ks=(10,), progress=False)  # no cold split, no groups
    assert not any(k.startswith("cold_target/") for k in plain.metrics)


def test_scheme_round_trips_through_its_description():
    scheme = ColdStart(500, 0.1, seed=4)
    described = scheme.describe(np.array([0, 5, 10]))
    again = ColdStart.from_config(described)
    assert np.array_equal(again.cold_items, scheme.cold_items)
    assert described["num_cold_items"] == 50 and described["scheme"] == "cold_start"


def test_pipeline_applies_the_protocol_as_a_cached_stage(source, tmp_path):
    from genrec.config import load_config
    from genrec.pipeline.cache import StageCache
    from genrec.pipeline.stages import prepare_stage
    from genrec.settings import ConfigError

    cache = StageCache(tmp_path / "cache")
    overrides = [f"data.prepared='{source.path}'", "data.cold_start=0.2", "data.cold_start_seed=3"]
    first = prepare_stage(load_config(None, overrides=overrides), cache)
    derived = load_prepared(first.path)
    assert np.array_equal(derived.cold_items(), select_cold_items(60, 0.2, seed=3))
    assert first.info["cold_items"] == 12 and not first.cached
    again = prepare_stage(load_config(None, overrides=overrides), cache)
    assert again.cached and again.path == first.path
    off = prepare_stage(load_config(None, overrides=overrides[:1]), cache)
    assert off.path == source.path  # cold_start = 0: the dataset as prepared
    with pytest.raises(ConfigError, match="already a cold-start dataset"):
        prepare_stage(
            load_config(None, overrides=[f"data.prepared='{first.path}'", "data.cold_start=0.1"]), cache
        )
    with pytest.raises(ConfigError, match=r"data\.cold_start"):
        load_config(None, overrides=["data.cold_start=1.5"])


def test_cli_derives_the_cold_start_dataset(source, tmp_path):
    from typer.testing import CliRunner

    from genrec.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-cold"
    result = runner.invoke(
        app, ["data", "cold-start", str(source.path), "--out", str(out), "--fraction", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert "12 of 60 items cold" in result.output
    assert np.array_equal(load_prepared(out).cold_items(), select_cold_items(60, 0.2))
    again = runner.invoke(app, ["data", "cold-start", str(out), "--out", str(tmp_path / "x")])
    assert again.exit_code == 1 and "leave-one-out" in again.output
