"""Chapters 07-09 and 12, and the summary page: ImageNet, deployment, tuning, own models."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from igkd import paper, stats
from igkd.conclusions._core import (
    _chance_note,
    _nan,
    _p,
    comparison,
    sig,
    signed,
    wilson,
)
from igkd.conclusions.grids import _trends

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
    size: str = "4.1",
) -> str:
    """The summary page's opening paragraph, from the runs its tables count: the teacher beside
    the paper's, focus - reference at the ablation's student `size` (the paper's: 4.1; quick's
    140, chapter 11's choice; a departure is named) (paired by seed where every run's seed is known, else
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
    at = f"Ablation at {size}x" + ("" if size == "4.1" else " (the paper's ablation: 4.1x)")
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
            f"{at}: "
            + comparison(focus, reference, res, paper_diff=claim)
            + (" " + _chance_note({focus: res["mean_a"], reference: res["mean_b"]})).rstrip()
        )
    else:
        parts.append(
            f"{at}, {focus} - {reference} (the paper: {signed(claim)} pp): not run in "
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
