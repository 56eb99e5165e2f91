"""The paired tests against cases worked out by hand and against printed t tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genrec.report import stats as S

# Five users, two methods. d = a - b = [0.3, 0.0, 0.5, 0.1, 0.3]:
#   mean 0.24; squared deviations 0.0036 + 0.0576 + 0.0676 + 0.0196 + 0.0036 = 0.152;
#   sd = sqrt(0.152 / 4) = 0.194936; se = sd / sqrt(5) = 0.0871780; t = 0.24 / 0.0871780 = 2.752989.
#   With 4 degrees of freedom, two-sided p = 0.051217 (the t table puts 2.776 at p = 0.05).
A = [0.8, 0.6, 0.9, 0.7, 1.0]
B = [0.5, 0.6, 0.4, 0.6, 0.7]


def test_paired_t_test_matches_the_hand_computed_case():
    t, df, p = S.paired_t_test(A, B)
    assert df == 4
    assert t == pytest.approx(2.752989, abs=1e-6)
    assert p == pytest.approx(0.051217, abs=1e-6)
    t_rev, _, p_rev = S.paired_t_test(B, A)
    assert t_rev == pytest.approx(-t) and p_rev == pytest.approx(p)


def test_permutation_test_enumerates_sign_patterns_exactly():
    # Four non-zero differences (0.3, 0.5, 0.1, 0.3; the zero plays no part): 16 sign patterns, and
    # only all-plus and all-minus reach |sum| = 1.2, so p = 2 / 16.
    p, draws = S.paired_permutation_test(A, B)
    assert draws == 0
    assert p == pytest.approx(2 / 16)
    # Differences [1, 2, 3]: |sum| >= 6 only for +++ and ---, |sum| = 4 for -++... so p = 2 / 8.
    assert S.paired_permutation_test([1, 2, 3], [0, 0, 0])[0] == pytest.approx(0.25)


def test_monte_carlo_permutation_agrees_with_the_exact_answer():
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 1.0, 14)
    b = rng.normal(0.0, 1.0, 14)
    exact, _ = S.paired_permutation_test(a, b)
    approx, draws = S.paired_permutation_test(a, b, exact_up_to=0, permutations=20_000, seed=1)
    assert draws == 20_000
    assert approx == pytest.approx(exact, abs=0.01)


def test_t_distribution_against_printed_tables():
    # Two-sided 5% critical values: df=1 12.706, df=4 2.776, df=10 2.228, df=30 2.042.
    for df, crit in ((1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert S.t_sf_two_sided(crit, df) == pytest.approx(0.05, abs=2e-4)
        assert S.t_quantile(0.975, df) == pytest.approx(crit, abs=1e-3)
    # One degree of freedom is the Cauchy distribution: P(T <= t) = 1/2 + atan(t) / pi.
    for t in (-3.0, -0.4, 0.0, 1.0, 7.5):
        assert S.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    # Many degrees of freedom: the normal distribution.
    assert S.t_sf_two_sided(1.959964, 10**7) == pytest.approx(0.05, abs=1e-5)


def test_degenerate_differences():
    assert S.paired_t_test([1, 2, 3], [1, 2, 3]) == (0.0, 2, 1.0)
    t, _, p = S.paired_t_test([2, 3, 4], [1, 2, 3])  # every user better by exactly 1
    assert t == math.inf and p == 0.0
    assert S.paired_permutation_test([1, 2, 3], [1, 2, 3]) == (1.0, 0)
    with pytest.raises(ValueError, match="same length"):
        S.paired_t_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        S.paired_t_test([1, float("nan")], [1, 2])


def test_compare_paired_interval_and_counts():
    r = S.compare_paired(A, B)
    half = 2.776445 * 0.0871780  # t(0.975, 4) x standard error
    assert r.mean_diff == pytest.approx(0.24)
    assert (r.ci_low, r.ci_high) == (
        pytest.approx(0.24 - half, abs=1e-5),
        pytest.approx(0.24 + half, abs=1e-5),
    )
    assert (r.wins, r.losses, r.n) == (4, 0, 5)
    assert r.ci_low < 0 < r.ci_high  # p just above 0.05: the interval straddles 0


def test_holm_hand_computed():
    # Sorted p: 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08, 0.2 -> running max 0.04, 0.09, 0.09, 0.2.
    assert S.holm([0.01, 0.04, 0.03, 0.2]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert S.holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])


def test_mean_and_spread_over_seeds():
    s = S.mean_and_spread([0.09, 0.10, 0.11])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.10) and s["std"] == pytest.approx(0.01)
    assert s["ci95"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), abs=1e-6)
    assert S.mean_and_spread([0.5])["std"] == 0.0
    assert S.mean_and_spread([None])["mean"] is None
