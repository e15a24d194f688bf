"""Chapters 04-06: the ablation, the Monte Carlo, the compression sweep."""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from igkd import paper, stats
from igkd.conclusions._core import (
    _chance_note,
    _compare_all,
    _degenerate,
    _focus_first,
    _missing,
    _names,
    _nan,
    _p,
    comparison,
    sig,
    signed,
    spearman,
    verdict,
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
    trained: str | None = None,
) -> str:
    """Notebook 04: every method against the student, paired by seed, with Holm; the paper's
    headline (KD_IG above the student) first. `paper_recomputed`: `stats.compare_all` of the
    paper's ten runs (paired), whose t is checked against the printed one. `trained`: how the runs
    trained where that departs from the paper's ablation (e.g. "4.1x students, 20 epoch(s) per
    run, 5% of the training set"), named in the first sentence."""
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
    not_after_holm = [m for m in held if float(table.loc[m, "p_holm"]) >= 0.05]
    n = sorted({len(ours[m]) for m in [reference, *table.index]})
    head = (
        f"In profile `{profile}` on {data}, "
        + (f"{trained} (the paper's ablation: 4.1x, 100 epochs on all of it), " if trained else "")
        + f"{'/'.join(map(str, n))} seeds per method, "
        f"{table['test'].iloc[0]}-tested against the {reference} with Holm's correction: "
        + (
            f"{_names(held)} beat the plain {reference} with a CI that excludes 0"
            + (f" ({_names(not_after_holm)} not after Holm)" if not_after_holm else "")
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
