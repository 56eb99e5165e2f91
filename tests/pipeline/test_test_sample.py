"""eval.users: the test stage on a seeded sample of the users."""

from __future__ import annotations

import numpy as np
import pytest

from genrec.config import load_config
from genrec.eval.evaluator import load_per_user, sample_rows
from genrec.pipeline import run_pipeline
from genrec.settings import ConfigError
from tests.pipeline.conftest import tiny_overrides


def test_sample_rows_is_seeded_sorted_and_none_for_everyone():
    a = sample_rows(100, 10, seed=3)
    assert len(a) == 10 and np.all(np.diff(a) > 0) and np.array_equal(a, sample_rows(100, 10, seed=3))
    assert not np.array_equal(a, sample_rows(100, 10, seed=4))
    assert (
        sample_rows(100, 0, 3) is None
        and sample_rows(100, 100, 3) is None
        and sample_rows(100, None, 3) is None
    )


def test_the_test_stage_scores_only_the_sampled_users(tiny_prepared, tmp_path):
    base = [*tiny_overrides(tiny_prepared, tmp_path / "cache"), "train.epochs=2"]
    run_pipeline(load_config(None, overrides=base), tmp_path / "run", progress=False)
    everyone = load_per_user(tmp_path / "run" / "test_eval.json")
    again = run_pipeline(
        load_config(None, overrides=[*base, "eval.users=9"]), tmp_path / "run", progress=False
    )
    assert again.train["cached"]  # the sample is a test setting: the trained weights are reused
    sampled = load_per_user(tmp_path / "run" / "test_eval.json")
    want = sample_rows(len(everyone["row"]), 9, seed=load_config(None, overrides=base).run.seed)
    assert sampled["row"].tolist() == want.tolist()
    for key in ("user_idx", "target", "recall@10", "ndcg@10"):
        np.testing.assert_allclose(sampled[key], everyone[key][want], atol=1e-6)
    with pytest.raises(ConfigError, match=r"eval\.users"):
        load_config(None, overrides=[*base, "eval.users=-1"])
