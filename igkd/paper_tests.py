"""The paper's own tests, redone: the Monte Carlo's Student t on its published moments (notebook
05) and the ablation's selected pairwise comparisons on our runs (notebook 04), each beside the
paper's numbers.

The Monte Carlo's 60 runs per method were not published, only their mean and variance
(`paper.MONTE_CARLO`), and the paper compared each method with the student by an independent
two-sample t-test with equal variances (paper.md 7.3). `monte_carlo_published` recomputes that
test from the moments (t about 9.7, 14.8 and 14.3 for KD, KD_IG and KD_IG_AT) beside Welch's;
`monte_carlo_beside` adds our runs' Welch and paired tests. `ablation_pairs` runs the paper's
selected pairs (`paper.ABLATION_PAIRED_PAIRS`) on the paper's ten runs and on ours, paired by
seed, Holm-corrected across the pairs. Tables are pandas DataFrames; accuracies and differences
in %, percentage points.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from igkd import paper, stats
from igkd.errors import ConfigError

PUBLISHED = "paper, published moments"
STUDENT_T = "paper: Student t (equal var.)"
WELCH_MOMENTS = "paper: Welch t"
OURS_WELCH = "ours: Welch t"
OURS_PAIRED = "ours: paired t"


def _moments(method: str) -> tuple[float, float, int]:
    mean, _median, variance = paper.MONTE_CARLO[method]
    return mean, variance, paper.MONTE_CARLO_RUNS


def monte_carlo_published(reference: str = "student") -> pd.DataFrame:
    """Each Monte Carlo method against `reference` from the paper's published moments (mean,
    variance, n = 60): the paper's equal-variance Student t and Welch's, each with Holm's
    correction across the methods. Index: method; columns (group, stat): the paper's means and
    difference (pp), then t, df, p and p_holm of each test."""
    if reference not in paper.MONTE_CARLO:
        raise ConfigError(f"reference={reference!r}; use one of {', '.join(paper.MONTE_CARLO)}")
    others = [m for m in paper.MONTE_CARLO if m != reference]
    rows: dict[str, dict[tuple[str, str], float]] = {m: {} for m in others}
    for group, equal_var in ((STUDENT_T, True), (WELCH_MOMENTS, False)):
        results = {
            m: stats.compare_moments(_moments(m), _moments(reference), equal_var) for m in others
        }
        p_holm = stats.holm([results[m]["p"] for m in others])
        for m, ph in zip(others, p_holm, strict=True):
            r = results[m]
            rows[m][(PUBLISHED, "mean")] = r["mean_a"]
            rows[m][(PUBLISHED, f"mean {reference}")] = r["mean_b"]
            rows[m][(PUBLISHED, "diff")] = r["diff"]
            for k in ("t", "df", "p"):
                rows[m][(group, k)] = r[k]
            rows[m][(group, "p_holm")] = float(ph)
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def pre_v1_means(settings: str) -> dict[str, float] | None:
    """The pre-v1 Monte Carlo's means (`paper.MONTE_CARLO_PRE_V1`) that were run with the same
    alpha, T and p as `settings` (v1 shares pre-v1-p0.25's), or None when none was."""
    s = paper.SETTINGS[settings]
    if (s["alpha"], s["temperature"]) != (0.1, 3.0):
        return None
    return paper.MONTE_CARLO_PRE_V1.get(s["overlay_prob"])


def monte_carlo_reference(
    settings: str = "v2", methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """The paper's Monte Carlo per method for the settings `settings` (`paper.SETTINGS`): for v2
    its 60-run n, mean, median, sd (from the variance) and Lilliefors D and p; for the earlier
    settings the pre-v1 means run with them (`pre_v1_means`; all it published, n unknown).
    `methods`: the rows to keep (None: all)."""
    from igkd import experiments

    experiments.named_settings(settings)
    if settings == "v2":
        rows = {
            m: {
                "n": paper.MONTE_CARLO_RUNS,
                "mean": v[0],
                "median": v[1],
                "sd": math.sqrt(v[2]),
                "lilliefors_d": paper.MONTE_CARLO_LILLIEFORS[m][0],
                "lilliefors_p": paper.MONTE_CARLO_LILLIEFORS[m][1],
            }
            for m, v in paper.MONTE_CARLO.items()
        }
    else:
        rows = {m: {"n": math.nan, "mean": v} for m, v in (pre_v1_means(settings) or {}).items()}
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=list(next(iter(rows.values()), {}))
    )
    keep = [m for m in table.index if methods is None or m in methods]
    return table.loc[keep].rename_axis("method")


def _our_tests(
    ours: Mapping[str, Sequence[float]], reference: str, paired: bool
) -> pd.DataFrame | None:
    """`stats.compare_all` of our runs (methods with 2+ runs), or None when nothing can be tested
    (or, for paired, when the methods' run counts differ)."""
    usable = {m: list(v) for m, v in ours.items() if len(v) >= 2}
    if reference not in usable or len(usable) < 2:
        return None
    if paired and len({len(v) for v in usable.values()}) > 1:
        return None
    with warnings.catch_warnings():  # identical runs: scipy warns, the table shows NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.compare_all(usable, reference, paired=paired)


def monte_carlo_beside(
    ours: Mapping[str, Sequence[float]], reference: str = "student"
) -> pd.DataFrame:
    """`monte_carlo_published` beside our runs' Welch and paired tests (by draw: run i of every
    method shares its subset and seed) against `reference`, each Holm-corrected across our
    methods. `ours`: method -> accuracy (%) per run. Rows: the paper's methods, then ours; NaN
    where a side lacks the method or has fewer than 2 runs."""
    theirs = monte_carlo_published(reference)
    parts = [theirs]
    cols = ["diff", "t", "p", "p_holm"]  # df: in the chapter's own table of these tests
    for group, paired in ((OURS_WELCH, False), (OURS_PAIRED, True)):
        table = _our_tests(ours, reference, paired)
        if table is None:
            table = pd.DataFrame(columns=cols, dtype=float)
        part = table[cols].copy()
        part.columns = pd.MultiIndex.from_product([[group], cols])
        parts.append(part)
    index = list(theirs.index) + [m for m in ours if m != reference and m not in theirs.index]
    return pd.concat(parts, axis=1).reindex(index).rename_axis("method")


def _pair_name(a: str, b: str) -> str:
    return f"{a} - {b}"


def ablation_pairs(
    ours: Mapping[str, Sequence[float]],
    pairs: Mapping[tuple[str, str], tuple[float, float | None, float]] | None = None,
) -> pd.DataFrame:
    """The paper's selected pairwise comparisons (`pairs`, None for `paper.ABLATION_PAIRED_PAIRS`:
    (a, b) -> (printed mean a - mean b, printed t or None, printed p)) three ways: as printed,
    recomputed on the paper's ten runs (paired, as its code did) and on our runs, paired by seed
    (Welch when the two methods' run counts differ). Holm's correction runs across the pairs that
    each side could test. Index: "a - b"; columns (group, stat); `ours` method -> accuracy (%)
    per run. A pair whose method did not run (or ran fewer than twice) has NaN in our columns."""
    pairs = paper.ABLATION_PAIRED_PAIRS if pairs is None else pairs
    if not pairs:
        raise ConfigError("pairs is empty; give {(method a, method b): (diff, t, p), ...}")
    rows: dict[str, dict[tuple[str, str], object]] = {}
    recomputed, mine = {}, {}
    for (a, b), (diff, t, p) in pairs.items():
        for m in (a, b):
            if m not in paper.METHODS:
                raise ConfigError(f"pair ({a!r}, {b!r}): {m!r} is not one of {paper.METHODS}")
        name = _pair_name(a, b)
        rows[name] = {
            ("paper, as printed", "diff"): diff,
            ("paper, as printed", "t"): math.nan if t is None else t,
            ("paper, as printed", "p"): p,
        }
        recomputed[name] = stats.compare(paper.ABLATION_RUNS[a], paper.ABLATION_RUNS[b], True)
        x, y = list(ours.get(a, [])), list(ours.get(b, []))
        if len(x) >= 2 and len(y) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mine[name] = stats.compare(x, y, paired=len(x) == len(y))
    for group, results in (("paper's runs, recomputed", recomputed), ("ours", mine)):
        names = [n for n in rows if n in results]
        holm = dict(zip(names, stats.holm([results[n]["p"] for n in names]), strict=True))
        mine_keys = ["n_a", "n_b", "diff", "ci_low", "ci_high", "t", "p"]
        keys = mine_keys if group == "ours" else ["diff", "t", "p"]
        for n in rows:
            r = results.get(n, {})
            for k in keys:
                rows[n][(group, k)] = r.get(k, math.nan)
            rows[n][(group, "p_holm")] = float(holm.get(n, math.nan))
            if group == "ours":
                rows[n][(group, "test")] = r.get("test", "not run")
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("pair")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def numeric(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """`table` with its float columns rounded to `digits` significant digits, for display."""

    def round_sig(x: object) -> object:
        if isinstance(x, float | np.floating) and math.isfinite(x) and x != 0:
            return float(f"{x:.{digits}g}")
        return x

    return table.map(round_sig)
