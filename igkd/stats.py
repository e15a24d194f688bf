"""Statistics over many runs: per-method summaries, normality, t-tests, effect sizes, Holm.

Inputs are accuracies in % (or any other score), one value per run. scipy and statsmodels do the
maths; this module checks the inputs and arranges the outputs as dicts and pandas DataFrames.

Which t-test: `paired=True` pairs run i of one method with run i of the other, which is right only
when the two runs share their seed and data split (the paper's 7.2 ablation uses it; see
paper.md). Otherwise use Welch's test (`paired=False`), which does not assume equal variances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.diagnostic import lilliefors
from statsmodels.stats.multitest import multipletests

from igkd.errors import ConfigError

CONFIDENCE = 0.95


def _values(values: Sequence[float], name: str = "values") -> np.ndarray:
    """`values` as a 1-D float array; ConfigError if empty, not numbers, or holding NaN/inf."""
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be a list of numbers, got {values!r} ({e})") from None
    if x.ndim != 1:
        raise ConfigError(f"{name} must be a flat list of numbers, got shape {x.shape}")
    if x.size == 0:
        raise ConfigError(f"{name} is empty; give at least one run's value")
    if not np.isfinite(x).all():
        raise ConfigError(f"{name} holds NaN or infinite values ({x.tolist()}); drop failed runs")
    return x


def describe(values: Sequence[float]) -> dict:
    """Summary of one method's runs.

    Returns n, mean, sd (ddof=1), ci_low/ci_high (95 % t interval of the mean), min, max,
    shapiro_p (Shapiro-Wilk, needs n >= 3), lilliefors_d/lilliefors_p (statsmodels, table p-values
    as in the paper, needs n >= 4) and `note`, which says why a value is NaN ("" when none is).
    """
    out = _describe(_values(values))
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in out.items()}


def _describe(x: np.ndarray) -> dict:
    n = x.size
    nan = math.nan
    out = {"n": int(n), "mean": x.mean(), "sd": nan, "ci_low": nan, "ci_high": nan}
    out |= {"min": x.min(), "max": x.max(), "shapiro_p": nan, "lilliefors_d": nan}
    out |= {"lilliefors_p": nan, "note": ""}
    if n < 2:
        out["note"] = "n=1: sd and CI need n >= 2, Shapiro-Wilk n >= 3, Lilliefors n >= 4"
        return out
    out["sd"] = x.std(ddof=1)
    sem = stats.sem(x)
    if sem > 0:
        out["ci_low"], out["ci_high"] = stats.t.interval(
            CONFIDENCE, n - 1, loc=out["mean"], scale=sem
        )
    else:  # every run gave the same value: the interval is that value and normality is undefined
        out["ci_low"] = out["ci_high"] = out["mean"]
        out["note"] = "all values equal: normality tests undefined"
        return out
    if n < 3:
        out["note"] = f"n={n}: Shapiro-Wilk needs n >= 3, Lilliefors n >= 4"
        return out
    out["shapiro_p"] = stats.shapiro(x).pvalue
    if n < 4:
        out["note"] = f"n={n}: Lilliefors needs n >= 4"
        return out
    out["lilliefors_d"], out["lilliefors_p"] = lilliefors(x, dist="norm", pvalmethod="table")
    return out


def summarize(results: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Per-method summary table (one row per method, in the given order; columns as `describe`)."""
    if not results:
        raise ConfigError("results is empty; give {method: [value per run, ...]}")
    rows = {}
    for method, values in results.items():
        try:
            rows[method] = describe(values)
        except ConfigError as e:
            raise ConfigError(f"method {method!r}: {e}") from None
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def compare(a: Sequence[float], b: Sequence[float], paired: bool = False) -> dict:
    """t-test of mean(a) against mean(b): Welch's (paired=False) or paired on run i (paired=True).

    Returns test, n_a, n_b, mean_a, mean_b, diff (mean_a - mean_b), ci_low/ci_high (95 % CI of diff),
    t, df, p (two-sided), d and d_kind: Cohen's d with the pooled sd for Welch, d_z (mean of the
    differences / their sd) for paired.
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.size < 2 or y.size < 2:
        raise ConfigError(f"a t-test needs at least 2 runs per side, got {x.size} and {y.size}")
    if paired:
        if x.size != y.size:
            raise ConfigError(
                f"paired test needs equal lengths, got {x.size} and {y.size}; "
                "pair runs by seed or use paired=False (Welch)"
            )
        res = stats.ttest_rel(x, y)
        diffs = x - y
        sd, d_kind = diffs.std(ddof=1), "d_z (mean difference / sd of differences)"
    else:
        res = stats.ttest_ind(x, y, equal_var=False)
        nx, ny = x.size, y.size
        sd = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
        d_kind = "Cohen's d (pooled sd)"
    diff = x.mean() - y.mean()
    ci = res.confidence_interval(CONFIDENCE)
    return {
        "test": "paired t" if paired else "Welch t",
        "n_a": x.size,
        "n_b": y.size,
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "diff": float(diff),
        "ci_low": float(ci.low),
        "ci_high": float(ci.high),
        "t": float(res.statistic),
        "df": float(res.df),
        "p": float(res.pvalue),
        "d": float(diff / sd) if sd > 0 else math.nan,
        "d_kind": d_kind,
    }


def compare_moments(
    a: tuple[float, float, int], b: tuple[float, float, int], equal_var: bool = True
) -> dict:
    """Two-sample t-test of mean(a) against mean(b) from published moments alone, each side given as
    (mean, variance with ddof=1, n): Student's t with a pooled variance (equal_var=True, the
    paper's Monte Carlo test, paper.md 7.3) or Welch's (False); `scipy.stats.ttest_ind_from_stats`.

    Returns the keys of `compare` (d: Cohen's d with the pooled sd). With equal n the two tests
    give the same t and differ only in df, hence p. No paired test is possible from moments.
    """
    (ma, va, na), (mb, vb, nb) = a, b
    for name, (m, v, n) in (("a", a), ("b", b)):
        if not (math.isfinite(m) and math.isfinite(v) and v >= 0):
            raise ConfigError(
                f"{name}=({m!r}, {v!r}, {n!r}): mean and variance must be finite, v >= 0"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"{name}: n={n!r}; a t-test needs an integer n >= 2 per side")
    res = stats.ttest_ind_from_stats(
        ma, math.sqrt(va), na, mb, math.sqrt(vb), nb, equal_var=equal_var
    )
    pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
    if equal_var:
        se, df = math.sqrt(pooled * (1 / na + 1 / nb)), float(na + nb - 2)
    else:
        se = math.sqrt(va / na + vb / nb)
        df = se**4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)) if se > 0 else math.nan
    diff = ma - mb
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se if se > 0 else math.nan
    return {
        "test": "Student t (equal variances)" if equal_var else "Welch t",
        "n_a": na,
        "n_b": nb,
        "mean_a": float(ma),
        "mean_b": float(mb),
        "diff": float(diff),
        "ci_low": diff - half,
        "ci_high": diff + half,
        "t": float(res.statistic),
        "df": df,
        "p": float(res.pvalue),
        "d": diff / math.sqrt(pooled) if pooled > 0 else math.nan,
        "d_kind": "Cohen's d (pooled sd)",
    }


def holm(p: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels' multipletests) of `p`; NaN entries stay NaN and are
    not counted among the tests."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
    return out


def compare_all(
    results: Mapping[str, Sequence[float]],
    reference: str,
    paired: bool = False,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every other method against `reference` (columns as `compare`, a = method, b = reference),
    plus p_holm (Holm-adjusted across these comparisons) and reject (p_holm < alpha)."""
    if reference not in results:
        raise ConfigError(f"reference {reference!r} is not among the methods {list(results)}")
    others = [m for m in results if m != reference]
    if not others:
        raise ConfigError(f"nothing to compare: results hold only the reference {reference!r}")
    rows = {}
    for method in others:
        try:
            rows[method] = compare(results[method], results[reference], paired=paired)
        except ConfigError as e:
            raise ConfigError(f"{method!r} vs {reference!r}: {e}") from None
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    reject, p_holm, _, _ = multipletests(table["p"], alpha=alpha, method="holm")
    table["p_holm"], table["reject"] = p_holm, reject
    return table


def seeds_needed(sd: float, effect: float, alpha: float = 0.05, power: float = 0.80) -> int:
    """Paired seeds needed to detect a mean difference `effect` (pp) when the paired differences
    scatter with standard deviation `sd` (pp): the smallest n at which a two-sided one-sample
    t-test on the differences (statsmodels' TTestPower) reaches `power`. At least 2 (a t-test
    needs two). Searched by doubling then bisection: statsmodels' own solver fails to converge
    when the effect is many sds large."""
    from statsmodels.stats.power import TTestPower

    if not (sd > 0 and effect > 0):
        raise ConfigError(f"seeds_needed(sd={sd!r}, effect={effect!r}): both must be positive")

    def enough(n: int) -> bool:
        return TTestPower().power(effect_size=effect / sd, nobs=n, alpha=alpha) >= power

    hi = 2
    while not enough(hi):
        hi *= 2
    lo = hi // 2  # not enough (or below 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return max(2, hi)


def half_width(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the `confidence` t-interval of a mean of `n` values with sd `sd`."""
    if n < 2:
        return math.inf
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))


def mcnemar(right_a: Sequence[bool], right_b: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test of two classifiers on the same items: (items only `a` gets right, items
    only `b` gets right, two-sided p of a binomial test on those discordant items; 1 with none).
    `right_a`, `right_b`: (N,) booleans, item i right or not."""
    from scipy.stats import binomtest

    a, b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"right_a {a.shape} and right_b {b.shape} must be two (N,) arrays")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return only_a, only_b, float(p)
