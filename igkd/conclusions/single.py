"""Chapters 00-03: the published students, the teacher, the IG maps, one student."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from igkd import paper
from igkd.conclusions._core import (
    IG_FREE,
    WITH_IG,
    _chance_note,
    _names,
    _nan,
    _p,
    sig,
    signed,
    spearman,
    wilson,
)
from igkd.conclusions.grids import trend

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
