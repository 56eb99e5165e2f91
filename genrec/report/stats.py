"""Paired significance tests on per-user metrics, with numpy and the standard library only.

Two methods scored on the same users give paired values a_i, b_i; the tests ask whether the mean
of d_i = a_i - b_i differs from 0:

- paired t-test: t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom, two-sided p from the
  Student t distribution (its CDF through the regularized incomplete beta function, computed here
  by a continued fraction, so no scipy is needed);
- paired permutation (sign-flip) test: under the null each d_i is as likely to be -d_i, so p is
  the share of random sign patterns whose |mean| reaches the observed one. Exact (all 2^m patterns
  of the m non-zero differences) when m is small, Monte Carlo with the (count + 1) / (draws + 1)
  correction otherwise. It assumes nothing about the shape of d (hit/miss metrics are 0/1).

``holm`` adjusts a family of p-values for multiple comparisons (Holm-Bonferroni).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# ---- the Student t distribution ----
_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got {a}, {b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * t_sf_two_sided(t, df)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on the CDF; |t| beyond 1e6 is treated as infinite)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


# ---- paired tests ----
@dataclass(frozen=True)
class PairedTest:
    """The result of comparing method a with method b on the same n users (d = a - b)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float  # 95% t interval of the mean difference
    ci_high: float
    t: float
    df: int
    p_t: float  # paired t-test, two-sided
    p_perm: float  # paired sign-flip permutation test, two-sided
    permutations: int  # 0 = exact enumeration
    wins: int  # users where a > b
    losses: int  # users where a < b

    def to_dict(self) -> dict:
        return asdict(self)


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of the same length, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"paired tests need at least 2 pairs, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired tests need finite values (drop users with NaN metrics first)")
    return a, b


def paired_t_test(a, b) -> tuple[float, int, float]:
    """(t, degrees of freedom, two-sided p) of the paired t-test of mean(a - b) = 0."""
    a, b = _paired(a, b)
    d = a - b
    n = len(d)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every difference equal: no spread to test against
        return (0.0, n - 1, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), n - 1, 0.0)
    t = mean / (sd / math.sqrt(n))
    return t, n - 1, t_sf_two_sided(t, n - 1)


def paired_permutation_test(a, b, *, permutations: int = 10_000, seed: int = 0, exact_up_to: int = 16):
    """(two-sided p, permutations drawn; 0 = exact) of the sign-flip test of mean(a - b) = 0."""
    a, b = _paired(a, b)
    d = a - b
    d = d[d != 0]  # zero differences look the same under every sign
    m = len(d)
    if m == 0:
        return 1.0, 0
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, observed)  # sums equal up to rounding count as reaching the observed one
    if m <= exact_up_to:
        patterns = ((np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1  # (2^m, m) of +-1
        sums = np.abs(patterns @ d)
        return float((sums >= observed - tol).mean()), 0
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    chunk = max(1, min(permutations, (1 << 24) // m))
    while done < permutations:
        size = min(chunk, permutations - done)
        signs = rng.integers(0, 2, size=(size, m), dtype=np.int8) * 2 - 1
        hits += int((np.abs(signs @ d) >= observed - tol).sum())
        done += size
    return (hits + 1) / (permutations + 1), permutations


def compare_paired(a, b, *, permutations: int = 10_000, seed: int = 0) -> PairedTest:
    """Both tests, the mean difference with its 95% t interval, and per-user wins/losses."""
    a, b = _paired(a, b)
    d = a - b
    n = len(d)
    t, df, p_t = paired_t_test(a, b)
    p_perm, draws = paired_permutation_test(a, b, permutations=permutations, seed=seed)
    half = t_quantile(0.975, df) * float(d.std(ddof=1)) / math.sqrt(n)
    mean = float(d.mean())
    return PairedTest(
        n=n,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        t=float(t),
        df=int(df),
        p_t=float(p_t),
        p_perm=float(p_perm),
        permutations=int(draws),
        wins=int((d > 0).sum()),
        losses=int((d < 0).sum()),
    )


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(adjusted)
    out = np.empty(m)
    out[order] = adjusted
    return out


def mean_and_spread(values) -> dict:
    """Mean, sample standard deviation and 95% t interval of the mean of ``values`` (e.g. over seeds)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "min": None, "max": None}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n) if n > 1 else None
    return {"n": n, "mean": mean, "std": std, "ci95": half, "min": float(v.min()), "max": float(v.max())}
