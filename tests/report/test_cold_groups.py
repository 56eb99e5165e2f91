"""genrec report on a cold-start split: paired tests also over cold-target and warm-target users."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from genrec.report.build import ReportOptions, _significance
from genrec.report.stats import compare_paired


def method(label, recall, cold):
    ev = SimpleNamespace(per_user={"recall@10": recall, "ndcg@10": recall * 0.5, "cold_target": cold})
    return SimpleNamespace(label=label, evaluations=[ev])


def test_group_tests_use_only_the_groups_rows():
    rng = np.random.default_rng(0)
    cold = rng.random(300) < 0.2
    a = (rng.random(300) < 0.3).astype(float)
    b = (rng.random(300) < 0.2).astype(float)
    tests = _significance([method("A", a, cold), method("B", b, cold)], ReportOptions(permutations=200))
    by_metric = {t["metric"]: t for t in tests}
    assert set(by_metric) == {
        "recall@10",
        "ndcg@10",
        "cold_target/recall@10",
        "cold_target/ndcg@10",
        "warm_target/recall@10",
        "warm_target/ndcg@10",
    }
    want = compare_paired(a[cold], b[cold], permutations=200, seed=0).to_dict()
    assert by_metric["cold_target/recall@10"]["p_t"] == want["p_t"]
    assert (
        by_metric["warm_target/recall@10"]["p_t"]
        == compare_paired(a[~cold], b[~cold], permutations=200).to_dict()["p_t"]
    )


def test_no_group_tests_when_the_files_disagree_on_the_groups():
    cold = np.zeros(50, bool)
    cold[:10] = True
    x = np.ones(50)
    tests = _significance([method("A", x, cold), method("B", x * 0, ~cold)], ReportOptions(permutations=100))
    assert {t["metric"] for t in tests} == {"recall@10", "ndcg@10"}


def test_a_group_without_two_users_gets_no_tests():
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    only_cold = np.ones(40, bool)
    tests = _significance(
        [method("A", a, only_cold), method("B", b, only_cold)], ReportOptions(permutations=50)
    )
    assert {t["metric"] for t in tests} == {
        "recall@10",
        "ndcg@10",
        "cold_target/recall@10",
        "cold_target/ndcg@10",
    }
    one_warm = only_cold.copy()
    one_warm[3] = False
    tests = _significance(
        [method("A", a, one_warm), method("B", b, one_warm)], ReportOptions(permutations=50)
    )
    assert not any(t["metric"].startswith("warm_target") for t in tests)
