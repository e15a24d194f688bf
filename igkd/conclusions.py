""" "What this shows": the closing paragraph of each result chapter, written from its own numbers.

Nothing here states a result: every sentence is assembled from the numbers passed in, so a chapter
run on other data, another profile or more seeds says something else. Each function returns
Markdown; notebooks show it with `IPython.display.Markdown`. Verdicts on the paper's claims follow
one rule (`verdict`): a claim held when the 95 % CI of our difference excludes 0 on the paper's
side, was reversed when it excludes 0 on the other side, and is not settled otherwise; a
not-settled verdict says how many paired seeds the observed scatter would need
(`stats.seeds_needed`).
Differences whose runs do not scatter at all (identical accuracies, as tiny profiles give) have no
t-test; they are reported as not settled, with that reason.

One function per chapter: `published` (00), `teacher` (01), `integrated_gradients` (02),
`single_run` (03), `ablation` (04), `monte_carlo` (05), `sweep` (06), `imagenet` (07),
`deployment` (08), `hyperparameters` (09), and `summary` for the book's summary page. Numbers are
rounded to 4 significant digits (`sig`), p-values to 3.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from igkd import paper, stats
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


# --- 00: the published students -------------------------------------------------------------------


def published(
    ours: Mapping[str, float],
    reported: Mapping[str, float],
    *,
    images: int,
    data: str,
    profile: str,
) -> str:
    """Notebook 00: the authors' released students on our test data. `ours`: method -> accuracy
    (%) here; `reported`: method -> the accuracy the authors report for that file."""
    methods = [m for m in ours if m in reported and not _nan(ours[m])]
    if not methods:
        return f"No published student could be evaluated in profile `{profile}` ({data})."
    acc = {m: float(ours[m]) for m in methods}
    gaps = {m: acc[m] - reported[m] for m in methods}
    lo_m, hi_m = min(acc, key=acc.get), max(acc, key=acc.get)
    half = max(wilson(50.0, images)[1] - 50.0, 0.0) if images else math.nan
    mean_gap = statistics.fmean(gaps.values())
    parts = [
        f"The {len(methods)} published 4.1x students score {sig(acc[lo_m])} % ({lo_m}) to "
        f"{sig(acc[hi_m])} % ({hi_m}) on {data} ({images:,} test images, profile `{profile}`), "
        f"**{signed(mean_gap)} pp** on average from the accuracies the authors report (from "
        f"{signed(min(gaps.values()))} to {signed(max(gaps.values()))} pp). With {images:,} test "
        f"images one model's accuracy is known to at most ±{sig(half)} pp (95 % Wilson interval "
        "at 50 %), so "
        + (
            "the mean gap is larger than the test set's sampling error: the published weights "
            "score differently on this data."
            if abs(mean_gap) > half
            else "the mean gap is within the test set's sampling error."
        )
    ]
    note = _chance_note(acc)
    if note:
        parts.append(note)
    if len(methods) >= 3:
        rho, p = spearman([reported[m] for m in methods], [acc[m] for m in methods])
        if _nan(rho):
            parts.append(
                "Their ranking cannot be compared with the reported one: the accuracies here (or "
                "the reported ones) are all equal."
            )
        else:
            v = "held" if p < 0.05 and rho > 0 else "reversed" if p < 0.05 else "not settled"
            spread = max(reported[m] for m in methods) - min(reported[m] for m in methods)
            parts.append(
                f"Ranked against the reported accuracies: Spearman rho {signed(rho, 3)} "
                f"(p = {_p(p)}, {len(methods)} checkpoints); the claim that the reported ranking "
                f"carries over to this data: **{v}**"
                + (
                    f"; the reported accuracies span only {sig(spread)} pp, and {len(methods)} "
                    "single checkpoints cannot order methods that close."
                    if v == "not settled"
                    else "."
                )
            )
    ig = [m for m in WITH_IG if m in acc]
    free = [m for m in IG_FREE if m in acc]
    if ig and free:
        ours_diff = statistics.fmean(acc[m] for m in ig) - statistics.fmean(acc[m] for m in free)
        theirs = statistics.fmean(reported[m] for m in ig) - statistics.fmean(
            reported[m] for m in free
        )
        parts.append(
            f"The {len(ig)} students trained with the IG overlay ({_names(ig)}) average "
            f"**{signed(ours_diff)} pp** against the {len(free)} without it ({_names(free)}); in "
            f"the reported accuracies the same difference is {signed(theirs)} pp. These are single "
            "checkpoints, one per method: a description, not a test of the overlay (notebooks 04 "
            "and 05 repeat runs over seeds for that)."
        )
    return " ".join(parts)


# --- 01: the teacher ------------------------------------------------------------------------------


def teacher(
    accuracy: float,
    *,
    epochs: int | None,
    images: int,
    profile: str,
    data: str,
    minutes: float | None = None,
    paper_epochs: int | None = None,
    paper_accuracy: float = paper.TEACHER_ACCURACY,
) -> str:
    """Notebook 01: one teacher run beside the paper's 93.91 %. The test set's sampling error
    (Wilson) is the only interval one run has; seed-to-seed scatter is not measured."""
    lo, hi = wilson(accuracy, images)
    gap = accuracy - paper_accuracy
    trained = (
        f" after {epochs} epoch(s)" + (f" ({sig(minutes)} min)" if minutes is not None else "")
        if epochs
        else ""
    )
    text = (
        f"The teacher reached **{sig(accuracy)} %** on {data} ({images:,} test images; 95 % "
        f"Wilson interval {sig(lo)} to {sig(hi)} %){trained} in profile `{profile}`: "
        f"**{signed(gap)} pp** from the paper's {sig(paper_accuracy)} %"
        + (f" after {paper_epochs} epochs" if paper_epochs else "")
        + ". "
    )
    if lo <= paper_accuracy <= hi:
        text += "The paper's accuracy lies inside that interval: this run is consistent with it."
    else:
        side = "below" if hi < paper_accuracy else "above"
        text += (
            f"The paper's accuracy lies outside that interval: this teacher is {side} it by more "
            "than the test set's sampling error."
        )
        if side == "below" and epochs and paper_epochs and epochs < paper_epochs:
            text += (
                f" It trained {epochs} of the paper's {paper_epochs} epochs, so the shortfall "
                "measures this profile's budget, not the recipe."
            )
    note = _chance_note({"teacher": accuracy})
    if note:
        text += " " + note
    return text + " One run: the scatter between seeds is not measured."


# --- 02: integrated gradients ---------------------------------------------------------------------


def integrated_gradients(
    errors: Mapping[int, float],
    *,
    store_steps: int,
    store_error: float,
    store_images: int,
    store_seconds: float,
    rate: float,
    study_images: int,
    profile: str,
    rule: str = "gausslegendre",
    study_rule: str = "gausslegendre",
    reference_steps: int = 50,
    all_images: int = 50_000,
) -> str:
    """Notebook 02: the completeness error of the stored maps (median |delta| / |F(x) - F(x')|
    over the store, `rule` at `store_steps`) beside the convergence study's error at the paper's
    `reference_steps` (`errors`: n_steps -> median error of `study_rule` over `study_images`
    images), and the time cost. `rate`: interpolants per second measured here at the paper's
    setting; `all_images`: the paper's training set."""
    errors = {int(k): float(v) for k, v in errors.items() if not _nan(v)}
    parts = [
        f"The stored maps use {store_steps} {rule} step(s) per image; their median completeness "
        f"error is **{sig(store_error)}** of |F(x) - F(x')| over the {store_images:,} training "
        f"images (profile `{profile}`)."
    ]
    if reference_steps in errors:
        ref = errors[reference_steps]
        at_store = errors.get(store_steps) if rule == study_rule else None
        text = (
            f"The convergence study ({study_rule}, median over {study_images} images) gives "
            f"{sig(ref)} at the paper's {reference_steps} steps"
        )
        if at_store is not None and store_steps != reference_steps:
            text += f" and {sig(at_store)} at the store's {store_steps}"
        if store_steps != reference_steps and ref > 0:
            text += (
                f": the store's error is **{sig(store_error / ref)} times** the "
                f"{reference_steps}-step error."
            )
        else:
            text += "."
        parts.append(text)
    elif errors:
        top = max(errors)
        parts.append(
            f"This profile's convergence study stops at {top} steps ({study_rule}: "
            f"{sig(errors[top])}, median over {study_images} images), so the error at the "
            f"paper's {reference_steps} steps is not measured here and the store cannot be "
            "compared with it."
        )
    if len(errors) >= 3:
        parts.append(
            trend(
                {float(k): v for k, v in errors.items()},
                what=f"The {study_rule} error",
                x_name="n_steps",
                expected="falls",
                claim="a quadrature's error",
            )
        )
    elif errors:
        parts.append(f"{len(errors)} step count(s) studied: too few to test how the error falls.")
    if rate > 0 and store_steps > 0:
        hours = all_images * reference_steps / rate / 3600
        parts.append(
            f"Time: the store took {sig(store_seconds)} s for {store_images:,} images x "
            f"{store_steps} step(s); at the {sig(rate)} interpolants/s measured here, the paper's "
            f"precompute ({all_images:,} images x {reference_steps} steps) would take "
            f"**{sig(hours)} h** on this machine: {sig(reference_steps / store_steps)} times the "
            "store's steps per image."
        )
    return " ".join(parts)


# --- 03: one student ------------------------------------------------------------------------------


def paper_accuracy(method: str, compression: str) -> tuple[float | None, str]:
    """The paper's accuracy for `method` at `compression` (a label such as "4.1") and where it
    comes from: the ten-run ablation mean at 4.1x, else the sweep table, else (None, '')."""
    if compression == "4.1" and method in paper.ABLATION_RUNS:
        return paper.ablation_mean(method), "ten-run mean"
    value = paper.SWEEP.get(compression, {}).get(method)
    return (value, "compression-sweep table") if value is not None else (None, "")


def single_run(
    accuracy: float,
    paper_accuracy: float | None,
    what: str,
    profile: str,
    *,
    images: int | None = None,
    epochs: int | None = None,
    paper_epochs: int | None = None,
    source: str = "",
) -> str:
    """Notebook 03 (and 01): one run beside the paper's number; no test is possible on one run.
    With `images` (test images) the test set's sampling error (Wilson) is given."""
    text = f"{what} reached **{sig(accuracy)} %** in profile `{profile}`"
    if epochs:
        text += f" after {epochs} epoch(s)" + (
            f" (the paper: {paper_epochs})" if paper_epochs else ""
        )
    if images:
        lo, hi = wilson(accuracy, images)
        text += f" (95 % Wilson interval {sig(lo)} to {sig(hi)} % on {images:,} test images)"
    if paper_accuracy is None:
        return text + "; the paper reports no number for this setting."
    gap = accuracy - paper_accuracy
    text += (
        f", {signed(gap)} pp from the paper's {sig(paper_accuracy)} %"
        + (f" ({source})" if source else "")
        + "."
    )
    note = _chance_note({"run": accuracy})
    if note:
        text += " " + note
    return text + (
        " One run cannot test a difference between methods; notebooks 04 and 05 repeat runs over "
        "seeds for that."
    )


# --- 04: the ablation -----------------------------------------------------------------------------


def _paper_reproduction(recomputed: Mapping[str, Mapping[str, float]] | Any) -> str:
    """Whether the paired t of the paper's own ten runs (recomputed here) matches the printed t."""
    if recomputed is None:
        return ""
    if hasattr(recomputed, "to_dict"):
        recomputed = recomputed.to_dict("index")
    matched, lines = [], []
    for m, (t_printed, p_printed) in paper.ABLATION_PAIRED_VS_STUDENT.items():
        if m not in recomputed:
            continue
        t = float(recomputed[m]["t"])
        ok = abs(t - t_printed) <= 1e-3  # printed to 3 decimals (one value rounded twice)
        matched.append(ok)
        if m == "KD_IG":
            lines.append(
                f"On the paper's own ten runs per method, the paired t-test of KD_IG against the "
                f"student gives t = {sig(t)} (p = {_p(recomputed[m]['p'])}); the paper prints "
                f"t = {sig(t_printed)} (p = {_p(p_printed)}), which this "
                + ("reproduces." if ok else "does **not** reproduce.")
            )
    if matched:
        lines.append(
            f"The recomputed t matches the printed one (to 0.001) for {sum(matched)} of "
            f"{len(matched)} methods."
        )
    return " ".join(lines)


def ablation(
    ours: Mapping[str, Sequence[float]],
    *,
    profile: str,
    data: str,
    reference: str = "student",
    focus: str = "KD_IG",
    paper_recomputed: Any = None,
) -> str:
    """Notebook 04: every method against the student, paired by seed, with Holm; the paper's
    headline (KD_IG above the student) first. `paper_recomputed`: `stats.compare_all` of the
    paper's ten runs (paired), whose t is checked against the printed one."""
    check = _paper_reproduction(paper_recomputed)
    table, note = _compare_all(ours, reference, paired=True)
    if table is None:
        have = ", ".join(f"{m} {len(v)}" for m, v in ours.items()) or "none"
        missing = _missing(ours, reference)
        text = (
            f"Profile `{profile}` ({data}) gives no test of a method against the {reference}: "
            f"{missing} (runs per method: {have}). Nothing can be told about the paper's claim "
            "here."
        )
        return text + ("\n\n" + check if check else "")
    means = {m: statistics.fmean(v) for m, v in ours.items() if v}
    lines = []
    for m in _focus_first(list(table.index), focus):
        row = table.loc[m]
        claim = (
            paper.ablation_mean(m) - paper.ablation_mean(reference)
            if m in paper.ABLATION_RUNS and reference in paper.ABLATION_RUNS
            else None
        )
        lines.append(
            "- "
            + comparison(m, reference, row.to_dict(), paper_diff=claim, p_holm=float(row["p_holm"]))
        )
    verdicts = {
        m: "not settled"
        if _degenerate(table.loc[m])
        else verdict(table.loc[m, "ci_low"], table.loc[m, "ci_high"], 1)
        for m in table.index
    }
    held = [m for m, v in verdicts.items() if v == "held"]
    below = [m for m, v in verdicts.items() if v == "reversed"]
    n = sorted({len(ours[m]) for m in [reference, *table.index]})
    head = (
        f"In profile `{profile}` on {data}, {'/'.join(map(str, n))} seeds per method, "
        f"{table['test'].iloc[0]}-tested against the {reference} with Holm's correction: "
        + (
            f"{_names(held)} beat the plain {reference} with a CI that excludes 0"
            if held
            else f"no method's difference from the plain {reference} has a CI that excludes 0 "
            "on the side the paper reports"
        )
        + (f"; {_names(below)} fell below it" if below else "")
        + "."
    )
    chance = _chance_note(means)
    body = [
        head + (" " + note if note else "") + (" " + chance if chance else ""),
        "\n".join(lines),
    ]
    if check:
        body.append(check)
    return "\n\n".join(body)


# --- 05: the Monte Carlo ------------------------------------------------------------------------


def monte_carlo(
    ours: Mapping[str, Sequence[float]],
    *,
    profile: str,
    data: str,
    fraction: float | None = None,
    reference: str = "student",
    focus: str = "KD_IG",
) -> str:
    """Notebook 05: each method against the student over Train80Rand draws: Welch (the paper used
    an independent test) and paired by draw, both Holm-corrected, beside the paper's Monte Carlo
    means (60 runs each)."""
    share = f" on {sig(100 * fraction)} % draws of the training set" if fraction else ""
    welch, _ = _compare_all(ours, reference, paired=False)
    if welch is None:
        have = ", ".join(f"{m} {len(v)}" for m, v in ours.items()) or "none"
        return (
            f"Profile `{profile}` ({data}) gives no test of a method against the {reference}: "
            f"{_missing(ours, reference)} (draws per method: {have}). Nothing can be told about "
            "the paper's claim here."
        )
    paired, note = _compare_all(ours, reference, paired=True)
    if paired is not None and paired["test"].iloc[0] != "paired t":
        paired = None
    theirs = {m: v[0] for m, v in paper.MONTE_CARLO.items()}
    lines = []
    for m in _focus_first(list(welch.index), focus):
        claim = theirs[m] - theirs[reference] if m in theirs and reference in theirs else None
        row = welch.loc[m]
        text = "- " + comparison(
            m, reference, row.to_dict(), paper_diff=claim, p_holm=float(row["p_holm"])
        )
        if paired is not None:
            prow = paired.loc[m]
            if _degenerate(prow):
                text += " Paired by draw: the differences do not scatter, no test."
            else:
                v = verdict(prow["ci_low"], prow["ci_high"], claim if claim is not None else 1)
                text += (
                    f" Paired by draw (same subset and seed): 95 % CI {signed(prow['ci_low'])} "
                    f"to {signed(prow['ci_high'])} pp, Holm-adjusted p = {_p(prow['p_holm'])}"
                    + (f"; the claim **{v}**." if claim is not None else ".")
                )
        lines.append(text)
    means = {m: statistics.fmean(v) for m, v in ours.items() if v}
    gaps = [f"{m} {signed(means[m] - theirs[m])} pp" for m in means if m in theirs]
    n = sorted({len(v) for v in ours.values()})
    head = f"Profile `{profile}` on {data}, {'/'.join(map(str, n))} draw(s) per method{share}."
    if gaps:
        head += (
            f" Our means differ from the paper's 60-run means by {', '.join(gaps)}; only the "
            "differences between methods are comparable across profiles."
        )
    chance = _chance_note(means)
    return "\n\n".join([head + (" " + chance if chance else ""), "\n".join(lines)])


# --- 06: the compression sweep --------------------------------------------------------------------


def trend(
    points: Mapping[float, float],
    *,
    what: str,
    x_name: str,
    expected: str = "falls",
    paper_points: Mapping[float, float] | None = None,
    claim: str = "the paper's accuracy",
) -> str:
    """Notebook 06 and similar: does `what` fall (or rise) with x? Spearman's rho and its p.
    With `paper_points` the expected direction is the paper's own over the same x."""

    xs = sorted(points)
    if len(xs) < 3:
        return f"{what}: {len(xs)} {x_name} value(s), too few to test a trend (3 or more needed)."
    ys = [points[x] for x in xs]
    if paper_points is not None:
        common = [x for x in xs if x in paper_points]
        if len(common) >= 3:
            ref, _ = spearman(common, [paper_points[x] for x in common])
            if not _nan(ref) and ref != 0:
                expected = "falls" if ref < 0 else "rises"
    if len(set(ys)) == 1:
        return (
            f"{what} is the same at all {len(xs)} {x_name} values ({sig(ys[0])}): no trend to "
            f"test; {claim} {expected} with {x_name}."
        )
    rho, p = spearman(xs, ys)
    direction = "falls" if rho < 0 else "rises"
    agrees = direction == expected
    return (
        f"{what} {direction} with {x_name} (Spearman rho {signed(rho, 3)}, p = {_p(p)}, "
        f"{len(xs)} points); {claim} {expected} with it, "
        + (
            "as here."
            if agrees and p < 0.05
            else "which this profile "
            + ("shows in direction but not significantly." if agrees else "does not show.")
        )
    )


def _trends(
    ours: Mapping[str, Mapping[float, float]], theirs: Mapping[str, Mapping[float, float]]
) -> list[str]:
    """`trend` of accuracy against compression for each method with 3 or more compressions
    (beside the paper's direction over the same ones); one sentence for those with fewer."""
    out, few = [], {}
    for m, points in ours.items():
        if not points:
            continue
        if len(points) < 3:
            few[m] = len(points)
            continue
        out.append(
            trend(
                points,
                what=f"{m}'s accuracy",
                x_name="compression",
                paper_points=theirs.get(m) or None,
            )
        )
    if few:
        counts = "/".join(map(str, sorted(set(few.values()))))
        out.append(
            f"{_names(list(few))} ran at {counts} compression(s): too few to test a trend of "
            "accuracy with compression (3 or more needed)."
        )
    return out


def sweep(
    results: Sequence[Mapping[str, Any]],
    *,
    profile: str,
    data: str,
    reference: str = "student",
    focus: str = "KD_IG",
) -> str:
    """Notebook 06: accuracy against compression per method (Spearman, beside the paper's own
    direction over the same compressions) and focus - reference at each compression. `results`:
    the runs' metrics (compression, compression_ratio, method, final_test_accuracy)."""
    points: dict[tuple[str, str], list[float]] = {}
    ratio: dict[str, float] = {}
    for r in results:
        points.setdefault((r["compression"], r["method"]), []).append(r["final_test_accuracy"])
        ratio[r["compression"]] = float(r["compression_ratio"])
    if not points:
        return f"No sweep run finished in profile `{profile}`: nothing to report."
    labels = sorted(ratio, key=ratio.get)
    methods = list(dict.fromkeys(m for _, m in points))
    counts = sorted({len(v) for v in points.values()})
    parts = [
        f"Profile `{profile}` on {data}: {_names(methods)} at {len(labels)} compression(s) "
        f"({', '.join(f'{lab}x' for lab in labels)}), {'/'.join(map(str, counts))} run(s) per "
        "point."
    ]
    means = {k: statistics.fmean(v) for k, v in points.items()}
    ours = {
        m: {ratio[lab]: means[(lab, m)] for lab in labels if (lab, m) in means} for m in methods
    }
    theirs = {
        m: {
            ratio[lab]: paper.SWEEP[lab][m]
            for lab in labels
            if m in paper.SWEEP.get(lab, {}) and (lab, m) in means
        }
        for m in methods
    }
    parts += _trends(ours, theirs)
    chance = _chance_note({f"{k}": v for k, v in means.items()})
    if chance:
        parts.append(chance)
    both = [lab for lab in labels if (lab, focus) in points and (lab, reference) in points]
    if not both:
        parts.append(f"{focus} and {reference} never ran at the same compression here.")
        return " ".join(parts)
    lines, signs = [], []
    for lab in both:
        a, b = points[(lab, focus)], points[(lab, reference)]
        diff = means[(lab, focus)] - means[(lab, reference)]
        claim = paper.SWEEP.get(lab, {})
        paper_diff = (
            claim[focus] - claim[reference] if focus in claim and reference in claim else None
        )
        if len(a) >= 2 and len(b) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.compare(a, b, paired=len(a) == len(b))
            lines.append(
                "- " + comparison(focus, reference, res, paper_diff=paper_diff, where=f" at {lab}x")
            )
        else:
            lines.append(
                f"- {lab}x: {focus} - {reference} **{signed(diff)} pp**"
                + (f" (paper {signed(paper_diff)} pp)" if paper_diff is not None else "")
                + "; one run each, no test."
            )
        signs.append((diff, paper_diff))
    ahead = sum(d > 0 for d, _ in signs)
    paper_ahead = [p > 0 for _, p in signs if p is not None]
    text = (
        f"{focus} is ahead of the {reference} at {ahead} of {len(signs)} compression(s)"
        + (f" (in the paper: {sum(paper_ahead)} of {len(paper_ahead)})" if paper_ahead else "")
        + ". "
    )
    single = max(counts) < 2
    nonzero = [d for d, _ in signs if d != 0]
    if not nonzero:
        text += (
            f"Every difference is 0 (ties), so no sign test is possible: whether {focus} leads "
            "across sizes is **not settled** here."
        )
    elif 2 * 0.5 ** len(nonzero) > 0.05:
        text += (
            f"A sign test over {len(nonzero)} compression(s) with a nonzero difference cannot "
            f"reach p < 0.05 (its smallest p is {_p(2 * 0.5 ** len(nonzero))})"
            + ("; with one run per point nothing else can be tested" if single else "")
            + f", so whether {focus} leads across sizes is **not settled** here."
        )
    else:
        from scipy.stats import binomtest

        p = binomtest(sum(d > 0 for d in nonzero), len(nonzero)).pvalue
        v = "not settled" if p >= 0.05 else "held" if ahead > len(nonzero) / 2 else "reversed"
        text += (
            f"Sign test over the {len(nonzero)} compressions with a nonzero difference: "
            f"p = {_p(p)}; the claim that {focus} leads across sizes: **{v}**."
        )
    lines.insert(0, f"{focus} - {reference} per compression:")
    return " ".join(parts) + "\n\n" + text + "\n\n" + "\n".join(lines)


# --- 07: the ImageNet subset ----------------------------------------------------------------------


def imagenet(
    teacher: Mapping[str, float],
    students: Any,
    *,
    generated: bool,
    data: str,
    profile: str,
) -> str:
    """Notebook 07: nothing when the images are generated; else the teacher beside the paper's
    67.37 % and each student's balanced accuracy beside the paper's. `teacher`: `Scores.row()`;
    `students`: the notebook's table (index: student, columns "images", "balanced accuracy (%)",
    "paper balanced (%)", ...) or the same as a dict of rows."""
    rows = students.to_dict("index") if hasattr(students, "to_dict") else dict(students or {})
    n_all = int(teacher.get("images", 0))
    if generated:
        return (
            f"The {n_all:,} images of this run (profile `{profile}`) are **generated**, not "
            "ImageNet: CIFAR-10 test images resized and stored in the ILSVRC layout so that the "
            "code runs. **Nothing can be concluded about ImageNet from them**; the paper's claim "
            "that distilled students generalise to the ImageNet subset is not tested here. Set "
            "`source` to the downsampled ImageNet validation set to run the paper's protocol."
        )
    acc = float(teacher["accuracy (%)"])
    lo, hi = wilson(acc, n_all)
    inside = lo <= paper.IMAGENET_TEACHER_ACCURACY <= hi
    parts = [
        f"On {data} ({n_all:,} images, profile `{profile}`) the teacher scores **{sig(acc)} %** "
        f"(95 % Wilson interval {sig(lo)} to {sig(hi)} %), against the paper's "
        f"{sig(paper.IMAGENET_TEACHER_ACCURACY)} %: "
        + ("inside our interval." if inside else "outside our interval.")
    ]
    compared = {
        name: r
        for name, r in rows.items()
        if not _nan(r.get("paper balanced (%)")) and not _nan(r.get("balanced accuracy (%)"))
    }
    if not rows:
        parts.append("No student was evaluated.")
        return " ".join(parts)
    kept = int(next(iter(rows.values())).get("images", 0))
    best = max(rows, key=lambda k: rows[k]["balanced accuracy (%)"])
    parts.append(
        f"On the {kept:,} images it classifies correctly, the {len(rows)} students' balanced "
        f"accuracy ranges from {sig(min(r['balanced accuracy (%)'] for r in rows.values()))} to "
        f"{sig(rows[best]['balanced accuracy (%)'])} % ({best})."
    )
    if compared:
        diffs = {
            k: r["balanced accuracy (%)"] - r["paper balanced (%)"] for k, r in compared.items()
        }
        parts.append(
            f"The {len(compared)} students with a number in the paper differ from it by "
            f"{signed(statistics.fmean(diffs.values()))} pp on average (from "
            f"{signed(min(diffs.values()))} to {signed(max(diffs.values()))} pp)."
        )
        top = max(compared, key=lambda k: compared[k]["balanced accuracy (%)"])
        paper_top = max(paper.IMAGENET_SUBSET, key=lambda m: paper.IMAGENET_SUBSET[m][1])
        half = max(wilson(50.0, kept)[1] - 50.0, 0.0) if kept else math.nan
        parts.append(
            f"Highest balanced accuracy among them: {top}; in the paper, {paper_top}. Each is one "
            f"checkpoint (or the mean of a few runs) on {kept:,} images, known to about "
            f"±{sig(half)} pp (95 %): differences between students smaller than that are not "
            "resolved here."
        )
    return " ".join(parts)


# --- 08: deployment -------------------------------------------------------------------------------


def deployment(
    latency: Any,
    formats: Any,
    *,
    profile: str,
    threads: int,
    student: str = "4.1x",
    deployed_student: str = "4.1x student",
    batch: int = 1,
) -> str:
    """Notebook 08: our teacher/student latency ratio beside the paper's 140/13 ms, the cold
    single forward (the paper's protocol), and what int8 changes. `latency`: `latency.latency_table`
    (index "teacher", "<label>x"); `formats`: `deploy.deployment_table` (index (model, format))."""
    col, iqr = f"b{batch} median (ms)", f"b{batch} IQR (ms)"
    paper_ratio = paper.LATENCY_MS["teacher"] / paper.LATENCY_MS["4.1"]
    parts = []
    if "teacher" in latency.index and student in latency.index and col in latency.columns:
        t, s = float(latency.loc["teacher", col]), float(latency.loc[student, col])
        ratio = t / s
        t_iqr = float(latency.loc["teacher", iqr]) if iqr in latency.columns else 0.0
        s_iqr = float(latency.loc[student, iqr]) if iqr in latency.columns else 0.0
        low = (t - t_iqr / 2) / (s + s_iqr / 2)
        high = (t + t_iqr / 2) / max(s - s_iqr / 2, 1e-12)
        parts.append(
            f"Warm, batch {batch}, PyTorch fp32 on {threads} thread(s) (profile `{profile}`): the "
            f"teacher takes {sig(t)} ms and the {student} student {sig(s)} ms, a speed-up of "
            f"**{sig(ratio)}x**"
            + (
                f" (from {sig(low)}x to {sig(high)}x across the interquartile ranges)"
                if sig(low) != sig(high)
                else ""
            )
            + f"; the paper reports {sig(paper.LATENCY_MS['teacher'])} ms and "
            f"{sig(paper.LATENCY_MS['4.1'])} ms, **{sig(paper_ratio)}x**, which "
            + (
                "lies inside that range."
                if low <= paper_ratio <= high
                else f"is {sig(paper_ratio / ratio)} times ours."
            )
        )
        if "FLOP ratio" in latency.columns:
            parts.append(
                f"The arithmetic alone predicts {sig(float(latency.loc[student, 'FLOP ratio']))}x "
                "(ratio of FLOPs)."
            )
        if "cold forward (ms)" in latency.columns:
            tc = float(latency.loc["teacher", "cold forward (ms)"])
            sc = float(latency.loc[student, "cold forward (ms)"])
            parts.append(
                f"One cold forward each, as the paper timed: {sig(tc)} ms and {sig(sc)} ms, "
                f"{sig(tc / sc)}x. Timings are single measurements on this machine, not a test."
            )
    else:
        parts.append(f"The teacher and the {student} student were not both timed: no ratio.")
    for model in ("teacher", deployed_student):
        key = (model, "ONNX int8")
        if key not in formats.index:
            continue
        row = formats.loc[key]
        fp32 = formats.loc[(model, "ONNX fp32")] if (model, "ONNX fp32") in formats.index else None
        agree = float(row["agreement with PyTorch (%)"])
        change = float(row.get("Δ accuracy (pp)", math.nan))
        text = (
            f"int8 ({model}): agrees with PyTorch fp32 on {sig(agree)} % of the test images and "
            f"changes the accuracy by {signed(change)} pp"
        )
        if fp32 is not None and col in formats.columns:
            text += (
                f"; it runs in {sig(float(row[col]))} ms against {sig(float(fp32[col]))} ms in "
                f"ONNX fp32 ({sig(float(fp32[col]) / float(row[col]))}x)"
            )
            if "file (MiB)" in formats.columns:
                smaller = float(fp32["file (MiB)"]) / float(row["file (MiB)"])
                text += f", in a file {sig(smaller)}x smaller"
        text += "."
        pt = (model, "PyTorch fp32")
        acc = float(formats.loc[pt, "accuracy (%)"]) if pt in formats.index else math.nan
        note = _chance_note({model: float(acc)})
        if note:
            text += (
                f" The {model} is at chance level here ({sig(float(acc))} %), so its agreement "
                "says little about int8 on a trained model."
            )
        parts.append(text)
    return " ".join(parts)


# --- 09: hyperparameters --------------------------------------------------------------------------


def hyperparameters(
    best_params: Mapping[str, float],
    best_value: float,
    *,
    trials: Any,
    paper_choice: Mapping[str, float],
    importances: Mapping[str, float] | None,
    profile: str,
    method: str,
    val_images: int | None = None,
) -> str:
    """Notebook 09: the study's best trial beside the paper's chosen weights. `trials`: the
    study's table (columns "value", "state") or the completed trials' validation accuracies."""
    if hasattr(trials, "columns"):
        done = trials[trials["state"] == "COMPLETE"] if "state" in trials.columns else trials
        values = [float(v) for v in done["value"] if not _nan(float(v))]
    else:
        values = [float(v) for v in trials if not _nan(float(v))]
    if not values or _nan(best_value):
        return f"No trial of the study completed in profile `{profile}`: nothing to report."
    setting = ", ".join(
        f"{k} {sig(best_params[k])} (paper {sig(paper_choice[k])})"
        for k in best_params
        if k in paper_choice
    )
    parts = [
        f"{len(values)} completed trial(s) of {method} in profile `{profile}`, each one run "
        f"scored on the validation split. The best reached **{sig(best_value)} %** validation "
        f"accuracy with {setting}; the paper chose its values by test accuracy."
    ]
    if len(values) >= 2:
        spread = max(values) - min(values)
        text = (
            f"The trials span {sig(min(values))} to {sig(max(values))} % ({sig(spread)} pp); the "
            f"best is {signed(best_value - statistics.median(values))} pp above the median trial"
        )
        if val_images:
            lo, hi = wilson(best_value, val_images)
            half = (hi - lo) / 2
            text += (
                f", against ±{sig(half)} pp of sampling error on {val_images:,} validation images"
                + (
                    ": within it, so the best trial is not distinguishable from the median one."
                    if best_value - statistics.median(values) <= half
                    else "."
                )
            )
        else:
            text += "."
        parts.append(text)
    chance = _chance_note({"best": best_value})
    if chance:
        parts.append(chance)
    if importances:
        top = max(importances, key=importances.get)
        parts.append(
            f"fANOVA attributes {sig(100 * importances[top])} % of the score's variance to {top}"
            f" ({len(values)} trials: a rough estimate)."
        )
    else:
        parts.append("No parameter importances: the trials did not differ enough to fit them.")
    parts.append(
        "Whether the paper's choice is better or worse than the best trial is **not settled**: "
        "no trial ran at the paper's values, and each trial is one run, whose seed-to-seed "
        "scatter is not measured."
    )
    return " ".join(parts)


# --- the summary page -----------------------------------------------------------------------------


def summary(
    *,
    profile: str,
    data: str,
    teacher: Sequence[float],
    ablation: Mapping[str, Mapping[Any, float]],
    sweep: Mapping[str, Mapping[str, float]],
    ratios: Mapping[str, float],
    reference: str = "student",
    focus: str = "KD_IG",
) -> str:
    """The summary page's opening paragraph, from the runs its tables count: the teacher beside
    the paper's, focus - reference at 4.1x (paired by seed where every run's seed is known, else
    Welch) and the trend of accuracy with compression. `ablation`: method -> {seed: accuracy}
    (keys that are not int seeds mean unknown seeds: Welch); `sweep`: method -> {compression
    label: mean accuracy}; `ratios`: label -> compression ratio (`models.COMPRESSION_TABLE`)."""
    parts = [f"**What this build shows** (profile `{profile}`, {data})."]
    if teacher:
        mean = statistics.fmean(teacher)
        parts.append(
            f"Teacher: {sig(mean)} % over {len(teacher)} run(s), "
            f"**{signed(mean - paper.TEACHER_ACCURACY)} pp** from the paper's "
            f"{sig(paper.TEACHER_ACCURACY)} %."
        )
    else:
        parts.append("Teacher: not run in this profile.")
    a, b = ablation.get(focus, {}), ablation.get(reference, {})
    claim = paper.ablation_mean(focus) - paper.ablation_mean(reference)
    if len(a) >= 2 and len(b) >= 2:
        seeded = all(isinstance(k, int) for k in [*a, *b])  # else runs cannot be paired
        common = sorted(k for k in a if k in b) if seeded else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if len(common) >= 2 and len(common) == len(a) == len(b):
                res = stats.compare([a[k] for k in common], [b[k] for k in common], paired=True)
            else:
                res = stats.compare(list(a.values()), list(b.values()), paired=False)
        parts.append(
            "Ablation at 4.1x: "
            + comparison(focus, reference, res, paper_diff=claim)
            + (" " + _chance_note({focus: res["mean_a"], reference: res["mean_b"]})).rstrip()
        )
    else:
        parts.append(
            f"Ablation at 4.1x, {focus} - {reference} (the paper: {signed(claim)} pp): not run in "
            f"this profile with two or more runs of each ({len(a)} and {len(b)} here)."
        )
    trends = _trends(
        {
            m: {ratios[lab]: v for lab, v in by_label.items() if lab in ratios}
            for m, by_label in sweep.items()
        },
        {
            m: {
                ratios[lab]: paper.SWEEP[lab][m]
                for lab in by_label
                if m in paper.SWEEP.get(lab, {}) and lab in ratios
            }
            for m, by_label in sweep.items()
        },
    )
    parts.append(
        "Compression sweep: " + " ".join(trends)
        if trends
        else "Compression sweep: not run in this profile."
    )
    return " ".join(parts)


# --- 12: your own models -----------------------------------------------------------------------------


def own_models(
    teacher: float,
    plain: float,
    distilled: float,
    method: str,
    profile: str,
    *,
    images: int,
    data: str,
    paper_gain: float,
    discordant: tuple[int, int],
    p: float,
) -> str:
    """Chapter 12: a teacher and student of the reader's own design, the student trained plain and
    with `method`; one run each. `discordant` = (images only the distilled student gets right, only
    the plain one gets right) and `p` McNemar's exact p on them: a test of these two trained
    models on this test set, not of the method across seeds."""
    gain = distilled - plain
    lo_p, hi_p = wilson(plain, images)
    lo_d, hi_d = wilson(distilled, images)
    text = (
        f"On {data} ({images:,} test images, profile `{profile}`), the custom teacher reached "
        f"{sig(teacher)} %, the custom student {sig(plain)} % trained plain (95 % Wilson "
        f"{sig(lo_p)} to {sig(hi_p)} %) and {sig(distilled)} % with {method} ({sig(lo_d)} to "
        f"{sig(hi_d)} %): {signed(gain)} pp, against the paper's {signed(paper_gain)} pp for "
        f"{method} over the plain 4.1x student (its ten-run means). "
    )
    text += (
        f"On the images where the two students disagree, the distilled one alone is right on "
        f"{discordant[0]:,} and the plain one alone on {discordant[1]:,} (McNemar's exact test "
        f"{_p(p)}). "
    )
    note = _chance_note({"plain": plain, "distilled": distilled})
    if note:
        text += note + " "
    return text + (
        "Each student is one run with one seed, so this difference also holds seed-to-seed noise "
        "(chapter 11 measures its size on a CPU); what the chapter shows is that the losses, the "
        "IG maps and the overlay work with models that are not the paper's."
    )
