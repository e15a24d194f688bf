"""Numbers as text, verdicts and one difference: what every chapter's paragraph is made of."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from igkd import stats
from igkd.errors import ConfigError

CONFIDENCE = stats.CONFIDENCE
CHANCE_MARGIN = 5.0  # pp above chance below which every method counts as "at chance level"
IG_FREE = ("KD", "AT", "KD_AT")  # published students trained without the IG overlay
WITH_IG = ("IG", "KD_IG", "IG_AT", "KD_IG_AT")  # and with it


# --- numbers as text ------------------------------------------------------------------------------


def sig(x: float | None, digits: int = 4) -> str:
    """`x` rounded to `digits` significant digits ('n/a' for None or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def signed(x: float, digits: int = 4) -> str:
    return ("+" if x > 0 else "") + sig(x, digits)


def _p(p: float | None) -> str:
    return sig(p, 3)


def _names(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _nan(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def verdict(low: float, high: float, expected_sign: float) -> str:
    """'held', 'reversed' or 'not settled': where the CI [low, high] lies relative to 0, given the
    sign of the effect the paper reports."""
    if math.isnan(low) or math.isnan(high):
        return "not settled"
    if low > 0 or high < 0:
        return "held" if (low > 0) == (expected_sign > 0) else "reversed"
    return "not settled"


def _seeds_needed(sd: float, effect: float) -> str:
    """`stats.seeds_needed` as text; its solver fails when one pair would do (effect >> sd)."""
    try:
        n = stats.seeds_needed(sd, effect)
    except (ValueError, ConfigError):
        n = 2 if effect >= sd else None
    return f"{n:,}" if n is not None else "an unknown number of"


def power_sentence(sd: float, effects: Sequence[float] = (1.0, 0.5)) -> str:
    """How many paired seeds the observed scatter of differences would need for each effect."""
    if not sd > 0:
        return ""
    effects = [e for e in effects if e > 0]
    if not effects:
        return ""
    parts = [f"{_seeds_needed(sd, e)} seeds to detect {sig(e)} pp" for e in effects]
    return (
        f"With the paired differences scattering by {sig(sd)} pp (sd), a paired t-test at "
        f"alpha 0.05 with 80 % power would need {' and '.join(parts)}."
    )


def wilson(accuracy: float, n: int) -> tuple[float, float]:
    """95 % Wilson interval (%) of an accuracy (%) measured on `n` images: the test set's sampling
    error of one model's accuracy."""
    from statsmodels.stats.proportion import proportion_confint

    if not n or n < 1 or _nan(accuracy):
        return math.nan, math.nan
    k = round(accuracy / 100 * n)
    lo, hi = proportion_confint(k, n, alpha=1 - CONFIDENCE, method="wilson")
    return 100 * float(lo), 100 * float(hi)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p: exact (every permutation) up to 8 points, where scipy's
    t approximation gives p = 0 for a perfect 3-point ranking; scipy's above. NaN for constant
    input."""
    import itertools

    from scipy.stats import rankdata, spearmanr

    n = len(xs)
    if n < 2 or len(set(xs)) == 1 or len(set(ys)) == 1:
        return math.nan, math.nan
    res = spearmanr(xs, ys)
    rho = float(res.statistic)
    if n > 8:
        return rho, float(res.pvalue)
    import numpy as np

    rx, ry = rankdata(xs), rankdata(ys)
    perms = np.array(list(itertools.permutations(ry)))  # at most 8! = 40,320 rows
    cx, cp = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
    rhos = cp @ cx / (np.linalg.norm(cp, axis=1) * np.linalg.norm(cx))
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def _chance_note(means: Mapping[str, float], classes: int = 10) -> str:
    """A sentence when every mean is within CHANCE_MARGIN pp of chance (a profile too small to
    train), else ''. One model: about that model; several: about their differences."""
    values = [v for v in means.values() if not _nan(v)]
    chance = 100 / classes
    if not values or max(values) >= chance + CHANCE_MARGIN:
        return ""
    near = f"within {sig(CHANCE_MARGIN)} pp of chance ({sig(chance)} % for {classes} classes)"
    if len(values) == 1:
        return (
            f"{sig(values[0])} % is {near}: the model has learned too little in this profile for "
            "its accuracy to say anything about the paper's."
        )
    return (
        f"Every model here scores below {sig(chance + CHANCE_MARGIN)} %, {near}: this profile "
        "trains too little for the methods to differ, so its differences say nothing about the "
        "paper's."
    )


# --- one difference -----------------------------------------------------------------------------


def _degenerate(result: Mapping[str, float]) -> bool:
    """True when the test has no scatter to work with (identical values or differences): the CI
    then has width 0 and the p-value is 0 or NaN, neither of which means anything."""
    lo, hi, p = result["ci_low"], result["ci_high"], result.get("p")
    return _nan(p) or _nan(lo) or _nan(hi) or lo == hi


def comparison(
    a: str,
    b: str,
    result: Mapping[str, float],
    *,
    paper_diff: float | None = None,
    where: str = "",
    p_holm: float | None = None,
) -> str:
    """One difference a - b from `stats.compare`: its size, CI, test and p, the paper's claim
    (`paper_diff`, pp) and the verdict; with sd of the differences for a power sentence."""
    diff, lo, hi = result["diff"], result["ci_low"], result["ci_high"]
    n = int(result.get("n_a", 0))
    if _degenerate(result):
        text = (
            f"{a} - {b}{where}: **{signed(diff)} pp** ({n} runs each); the "
            f"{'differences' if result.get('test') == 'paired t' else 'runs'} do not scatter "
            f"(identical values), so the {result.get('test', 't-test')} has no CI or p-value."
        )
        if paper_diff is None:
            return text
        return (
            text + f" The paper reports {signed(paper_diff)} pp; here its claim is **not settled**:"
            " runs that all give the same accuracy carry no estimate of the scatter a test needs."
        )
    text = (
        f"{a} - {b}{where}: **{signed(diff)} pp** (95 % CI {signed(lo)} to {signed(hi)}; "
        f"{result.get('test', 't-test')}, p = {_p(result['p'])}"
        + (f", Holm-adjusted {_p(p_holm)}" if not _nan(p_holm) else "")
        + f"; {n} runs each)."
    )
    if paper_diff is None:
        return text
    v = verdict(lo, hi, paper_diff)
    text += f" The paper reports {signed(paper_diff)} pp; here its claim **{v}**."
    if v != "not settled" and not _nan(p_holm) and p_holm >= 0.05:
        # The verdict reads this comparison's own CI, as the paper did; say when the family of
        # comparisons takes it back.
        text += (
            f" That rests on this comparison alone: after Holm's correction across the"
            f" comparisons, p = {_p(p_holm)}, which does not stay below 0.05."
        )
    if v == "not settled":
        sd = _difference_sd(result)
        effects = [abs(paper_diff)] if abs(paper_diff) > 0 else [1.0, 0.5]
        extra = power_sentence(sd, effects) if sd == sd else ""
        text += (
            f" The 95 % CI, {sig(hi - lo)} pp wide, holds both 0 and differences of either sign:"
            " this profile cannot tell the methods apart at this size."
            + (" " + extra if extra else "")
        )
    return text


def _difference_sd(result: Mapping[str, float]) -> float:
    """sd of the paired differences (or, for Welch, of a difference of two runs)."""
    d, diff = result.get("d"), result["diff"]
    if d is None or not d or math.isnan(d):
        return math.nan
    sd = abs(diff / d)
    return sd if result.get("test") == "paired t" else sd * math.sqrt(2)


def _compare_all(
    ours: Mapping[str, Sequence[float]], reference: str, paired: bool
) -> tuple[Any, str]:
    """`stats.compare_all`, falling back to Welch when the runs cannot be paired (unequal counts);
    the table (None when no test is possible) and a note on what was done."""
    usable = {m: list(v) for m, v in ours.items() if len(v) >= 2}
    if reference not in usable or len(usable) < 2:
        return None, ""
    note = ""
    if paired and len({len(v) for v in usable.values()}) > 1:
        paired = False
        note = "The methods have different numbers of runs, so they are compared unpaired (Welch)."
    with warnings.catch_warnings():  # identical values: scipy warns, the text says so
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.compare_all(usable, reference, paired=paired), note


def _missing(ours: Mapping[str, Sequence[float]], reference: str) -> str:
    """Why `_compare_all` found nothing to test."""
    if reference not in ours:
        return f"the {reference} was not run"
    if len(ours[reference]) < 2:
        return f"the {reference} has fewer than two runs"
    if len(ours) < 2:
        return "no other method was run"
    return "no other method has two or more runs"


def _focus_first(methods: Sequence[str], focus: str) -> list[str]:
    return ([focus] if focus in methods else []) + [m for m in methods if m != focus]
