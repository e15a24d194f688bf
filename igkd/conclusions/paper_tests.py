"""Paragraphs for the paper's own tests and tables that chapters 04-06 add: the Monte Carlo's
Student t on its published moments (05), the ablation's selected pairs (04), the architecture per
compression factor (06), and the earlier settings a reader can rerun (05, 06).

Each function takes the table its chapter shows (`igkd.paper_tests`, `igkd.architecture`) and
returns Markdown assembled from those numbers; notebooks append it to the chapter's paragraph.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from igkd import paper, stats
from igkd.conclusions._core import _names, _nan, _p, sig, signed, verdict

ALPHA = 0.05


def _get(table: pd.DataFrame, row: str, group: str, stat: str) -> float:
    try:
        value = table.loc[row, (group, stat)]
    except KeyError:
        return math.nan
    return math.nan if value is None or pd.isna(value) else float(value)


# --- 05: the Monte Carlo's own test ---------------------------------------------------------------


def monte_carlo_published(table: pd.DataFrame, *, profile: str, data: str) -> str:
    """Notebook 05: the paper's equal-variance Student t on its published moments, Welch's beside
    it, and our runs' Welch and paired tests. `table`: `paper_tests.monte_carlo_beside`."""
    from igkd.paper_tests import OURS_PAIRED, OURS_WELCH, PUBLISHED, STUDENT_T, WELCH_MOMENTS

    methods = [m for m in table.index if not _nan(_get(table, m, STUDENT_T, "t"))]
    if not methods:
        return "The paper's published moments give no test here (no method beside the student)."
    ts = ", ".join(f"{sig(_get(table, m, STUDENT_T, 't'))} ({m})" for m in methods)
    worst = max(_get(table, m, STUDENT_T, "p_holm") for m in methods)
    worst_welch = max(_get(table, m, WELCH_MOMENTS, "p_holm") for m in methods)
    dfs = sorted({sig(_get(table, m, STUDENT_T, "df")) for m in methods})
    var = {m: v[2] for m, v in paper.MONTE_CARLO.items()}
    ratio_m = max(methods, key=lambda m: max(var[m], var["student"]) / min(var[m], var["student"]))
    ratio = max(var[ratio_m], var["student"]) / min(var[ratio_m], var["student"])
    parts = [
        f"The paper's own test, an independent Student t with equal variances on its published "
        f"moments ({paper.MONTE_CARLO_RUNS} runs per method; its outputs were not stored), gives "
        f"t = {ts} against the student, df {'/'.join(dfs)}; the largest Holm-adjusted p is "
        f"{_p(worst)}. Welch's test on the same moments "
        + (
            "gives the same t (equal n), with fewer degrees of freedom"
            if all(
                abs(_get(table, m, STUDENT_T, "t") - _get(table, m, WELCH_MOMENTS, "t")) < 1e-9
                for m in methods
            )
            else "gives other t"
        )
        + f"; its largest Holm-adjusted p is {_p(worst_welch)}. The variances differ by up to a "
        f"factor of {sig(ratio)} ({ratio_m} against the student), which the equal-variance test "
        "ignores; "
        + (
            "under both tests every difference stays below 0.05 after Holm: if the published "
            "moments are right, the Monte Carlo's differences are no accident of 60 draws."
            if max(worst, worst_welch) < ALPHA
            else "not every difference stays below 0.05 under both tests."
        )
    ]
    ours = [
        m
        for m in table.index
        if not _nan(_get(table, m, OURS_WELCH, "t")) or not _nan(_get(table, m, OURS_PAIRED, "t"))
    ]
    if not ours:
        parts.append(
            f"Our runs (profile `{profile}`, {data}) give no test of their own: too few draws, or "
            "draws that do not scatter."
        )
        return " ".join(parts)
    lines = []
    for m in ours:
        claim = _get(table, m, PUBLISHED, "diff")
        bits, holm = [], []
        for group, name in ((OURS_WELCH, "Welch"), (OURS_PAIRED, "paired by draw")):
            t, p, ph = (_get(table, m, group, k) for k in ("t", "p", "p_holm"))
            if _nan(t):
                continue
            if not math.isfinite(t):  # a constant difference: no scatter, no test
                bits.append(f"{name}: the draws do not scatter, no test")
                continue
            bits.append(f"{name} t = {sig(t)}, p = {_p(p)} (Holm {_p(ph)})")
            holm.append(ph)
        diff = _get(table, m, OURS_WELCH, "diff")
        if _nan(diff):
            diff = _get(table, m, OURS_PAIRED, "diff")
        best = min(holm) if holm else math.nan
        agrees = not _nan(claim) and (diff > 0) == (claim > 0)
        lines.append(
            f"- {m} - student: ours **{signed(diff)} pp**, "
            + "; ".join(bits)
            + (f"; the paper's moments {signed(claim)} pp" if not _nan(claim) else "")
            + (
                ": same sign as the paper's, and significant after Holm."
                if agrees and best < ALPHA
                else ": same sign as the paper's, but not significant after Holm here."
                if agrees and holm
                else ": same sign as the paper's, untested."
                if agrees
                else ": not the paper's sign."
                if not _nan(claim)
                else "."
            )
        )
    parts.append(
        f"Our draws (profile `{profile}`, {data}) under the same comparisons; the paired test "
        "needs the raw runs, which the paper did not publish, and pairs run i of every method, "
        "which share their subset and seed:"
    )
    return " ".join(parts) + "\n\n" + "\n".join(lines)


# --- 04: the ablation's selected pairs ------------------------------------------------------------


def ablation_pairs(table: pd.DataFrame, *, profile: str, data: str) -> str:
    """Notebook 04: the paper's selected pairwise comparisons, recomputed on its ten runs (do
    they reproduce the printed p, and which survive Holm) and on ours. `table`:
    `paper_tests.ablation_pairs`."""
    printed, recomputed, ours = "paper, as printed", "paper's runs, recomputed", "ours"
    pairs = list(table.index)
    reproduced = [
        n
        for n in pairs
        if abs(_get(table, n, recomputed, "p") - _get(table, n, printed, "p"))
        <= 0.5 * 10 ** math.floor(math.log10(abs(_get(table, n, printed, "p"))) - 1)
    ]
    below = [n for n in pairs if _get(table, n, recomputed, "p") < ALPHA]
    kept = [n for n in pairs if _get(table, n, recomputed, "p_holm") < ALPHA]
    lost = [n for n in below if n not in kept]
    parts = [
        f"Recomputed on the paper's ten runs per method (paired, as its code did), "
        f"{len(reproduced)} of the {len(pairs)} selected pairs reproduce the printed p to its "
        f"two significant digits. {len(below)} of them are below 0.05 uncorrected"
        + (f" ({_names(below)})" if below else "")
        + f"; with Holm's correction across the {len(pairs)} pairs, which the paper does not "
        f"apply, {len(kept)} remain"
        + (f", and {_names(lost)} no longer count" if lost else "")
        + "."
    ]
    tested = [n for n in pairs if not _nan(_get(table, n, ours, "n_a"))]
    missing = [n for n in pairs if n not in tested]
    if not tested:
        parts.append(
            f"None of the pairs could be tested on our runs (profile `{profile}`, {data}): "
            + (
                "their methods did not run, or ran fewer than twice."
                if missing
                else "no pair was given."
            )
        )
        return " ".join(parts)
    lines = []
    for n in tested:
        diff, lo, hi = (_get(table, n, ours, k) for k in ("diff", "ci_low", "ci_high"))
        claim = _get(table, n, printed, "diff")
        test = table.loc[n, (ours, "test")]
        if lo == hi or _nan(_get(table, n, ours, "p")):
            lines.append(
                f"- {n}: **{signed(diff)} pp**; the runs do not scatter, so the {test} has no CI; "
                f"the paper's {signed(claim)} pp is **not settled** here."
            )
            continue
        v = verdict(lo, hi, claim)
        lines.append(
            f"- {n}: **{signed(diff)} pp** (95 % CI {signed(lo)} to {signed(hi)}; {test}, "
            f"p = {_p(_get(table, n, ours, 'p'))}, Holm {_p(_get(table, n, ours, 'p_holm'))}; "
            f"{int(_get(table, n, ours, 'n_a'))}/{int(_get(table, n, ours, 'n_b'))} runs); the paper: {signed(claim)} pp, "
            f"p = {_p(_get(table, n, printed, 'p'))}; its direction **{v}** here."
        )
    with_p = [n for n in tested if not _nan(_get(table, n, ours, "p"))]
    parts.append(
        f"On our runs (profile `{profile}`, {data}), paired by seed, Holm across the "
        f"{len(with_p)} pair(s) with a p-value"
        + (f"; {_names(missing)} not tested (a method did not run twice)" if missing else "")
        + ":"
    )
    return " ".join(parts) + "\n\n" + "\n".join(lines)


# --- 06: the architecture per compression factor ---------------------------------------------------


def _decimals(printed: float) -> int:
    """Decimals the paper prints a memory in: 2, or as many as a value below 0.01 needs."""
    return max(2, -math.floor(math.log10(abs(printed)))) if printed else 2


def architecture(arch: pd.DataFrame) -> str:
    """Notebook 06: what each compression factor saves in parameters and in FLOPs, the paper's
    latency speed-ups beside the FLOP ratio, and whether our counts match the paper's table.
    `arch`: `architecture.table`."""
    students = arch.drop(index="teacher", errors="ignore").sort_values("ratio")
    if students.empty:
        return "The architecture table holds no student."
    first, last = students.iloc[0], students.iloc[-1]
    teacher = arch.loc["teacher"] if "teacher" in arch.index else None
    parts = [
        f"From {sig(first['ratio'])}x to {sig(last['ratio'])}x the students keep "
        f"{int(first['layers_kept'])} to {int(last['layers_kept'])} of the 19 feature modules and "
        f"{int(first['conv_layers'])} to {int(last['conv_layers'])} convolution layers; parameters "
        f"fall {sig(first['ratio'])}x to {sig(last['ratio'])}x, but FLOPs per image only "
        f"{sig(first['flops_ratio'])}x to {sig(last['flops_ratio'])}x"
        + (f" (the teacher: {sig(teacher['mflops'])} MFLOPs)" if teacher is not None else "")
        + (
            ": most of the computation is in the early, full-resolution modules that every "
            "student keeps."
            if (students["flops_ratio"] < students["ratio"]).all()
            else "."
        )
    ]
    speed = students.dropna(subset=["paper speed-up"])
    beyond = speed[speed["paper speed-up"] > speed["flops_ratio"]]
    if len(speed):
        ref = speed.loc["4.1"] if "4.1" in speed.index else speed.iloc[0]
        parts.append(
            f"The paper's latency speed-ups exceed the FLOP ratio at {len(beyond)} of "
            f"{len(speed)} compressions (at {ref.name}x: {sig(ref['paper speed-up'])}x against "
            f"{sig(ref['flops_ratio'])}x fewer FLOPs)"
            + (
                ", more than the arithmetic can explain; the only published code that produces "
                "such times measures one cold, unsynchronised forward pass (book/differences.md, "
                "item 9; chapter 08 measures latency with warm-up and repetitions)."
                if len(beyond) > len(speed) / 2
                else "."
            )
        )
    checks = []
    for ours_col, theirs_col, tol, what in (
        ("parameters", "paper parameters", 0, "parameters"),
        ("conv_layers", "paper conv_layers", 0, "convolution layers"),
        ("fp32_mb", "paper fp32_mb", None, "fp32 MB"),
        ("at_layer", "paper at_layer", 0, "AT layer"),
    ):
        have = arch.dropna(subset=[theirs_col])
        if have.empty:
            continue
        if tol is None:  # the paper prints MB to 2 decimals (3 below 0.01): compare as printed
            same = [
                round(float(r[ours_col]), _decimals(float(r[theirs_col]))) == float(r[theirs_col])
                for _, r in have.iterrows()
            ]
        else:
            same = [float(r[ours_col]) == float(r[theirs_col]) for _, r in have.iterrows()]
        checks.append(f"{what} {sum(same)} of {len(same)}")
    if checks:
        parts.append(
            "Our models agree with the paper's table (paper.md 1.2-1.3) in "
            + ", ".join(checks)
            + "."
        )
    return " ".join(parts)


# --- 05, 06: the earlier settings ------------------------------------------------------------------


def _settings_head(name: str) -> str:
    s = paper.SETTINGS[name]
    return (
        f"These runs use the settings `{name}` (alpha {sig(s['alpha'])}, T {sig(s['temperature'])}, "
        f"p {sig(s['overlay_prob'])}; {paper.SETTINGS_SOURCE[name]}). The paragraph above weighs "
        "them against the final paper's numbers (alpha 0.01, T 2.5, p 0.1); against the paper's "
        "own numbers for these settings:"
    )


def monte_carlo_settings(
    name: str, ours: Mapping[str, Sequence[float]], reference: str = "student"
) -> str:
    """Notebook 05 under an earlier setting: our differences from `reference` beside the pre-v1
    Monte Carlo's means run with the same settings (`paper_tests.pre_v1_means`); "" for v2."""
    if name == "v2":
        return ""
    from igkd.paper_tests import pre_v1_means

    theirs = pre_v1_means(name)
    if theirs is None:
        return _settings_head(name) + " the paper gives no Monte Carlo for them."
    lines = []
    for m in [m for m in ours if m != reference]:
        if m not in theirs or reference not in ours:
            continue
        claim = theirs[m] - theirs[reference]
        a, b = list(ours[m]), list(ours[reference])
        diff = statistics.fmean(a) - statistics.fmean(b)
        text = f"- {m} - {reference}: ours **{signed(diff)} pp**, the paper's pre-v1 means {signed(claim)} pp"
        if len(a) >= 2 and len(b) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.compare(a, b, paired=False)
            v = verdict(res["ci_low"], res["ci_high"], claim)
            text += f" (Welch 95 % CI {signed(res['ci_low'])} to {signed(res['ci_high'])}); its sign **{v}**."
        else:
            text += "; too few draws to test."
        lines.append(text)
    if not lines:
        return _settings_head(name) + " none of our methods is among the pre-v1 Monte Carlo's."
    return _settings_head(name) + "\n\n" + "\n".join(lines)


def sweep_settings(
    name: str,
    results: Sequence[Mapping[str, Any]],
    focus: str = "KD_IG",
    reference: str = "student",
) -> str:
    """Notebook 06 under an earlier setting: `focus` - `reference` per compression beside the v1
    sweep's single runs (`paper.SWEEP_V1`); "" for v2. `results`: the runs' metrics."""
    if name == "v2":
        return ""
    if name != "v1":
        return _settings_head(name) + " the paper gives no compression sweep for them."
    means: dict[tuple[str, str], list[float]] = {}
    for r in results:
        means.setdefault((r["compression"], r["method"]), []).append(r["final_test_accuracy"])
    labels = [lab for lab in paper.SWEEP_V1 if (lab, focus) in means and (lab, reference) in means]
    theirs = paper.SWEEP_V1
    ahead = sum(theirs[lab][focus] > theirs[lab][reference] for lab in theirs)
    head = (
        _settings_head(name)
        + f" the v1 sweep (single runs) has {focus} ahead of the {reference} at {ahead} of "
        f"{len(theirs)} compressions."
    )
    if not labels:
        return head + f" {focus} and {reference} never ran at the same compression here."
    lines = []
    for lab in labels:
        ours = statistics.fmean(means[(lab, focus)]) - statistics.fmean(means[(lab, reference)])
        claim = theirs[lab][focus] - theirs[lab][reference]
        lines.append(
            f"- {lab}x: ours **{signed(ours)} pp**, v1 {signed(claim)} pp"
            + (
                ": same sign."
                if (ours > 0) == (claim > 0) and ours != 0
                else ": not the same sign."
            )
        )
    return head + "\n\n" + "\n".join(lines)
