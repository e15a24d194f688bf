"""Chapter 09's grids: the paper's hyperparameter grids re-run and scored on a validation split."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np

from igkd import paper
from igkd.conclusions._core import _chance_note, _names, sig, signed, wilson
from igkd.hp_grids import AXIS_LABELS, PAPER_KD_GRID, TEST, VAL, best_points, get

# Seed-to-seed scatter the paper's grid spread is set against: its ten KD runs (paper.md 7.2).
_PAPER_SEED_SD = paper.ABLATION_SD["KD"]


def _point(row: Mapping[str, Any], axes: Any) -> str:
    return ", ".join(f"{AXIS_LABELS[k]} {sig(float(row[k]))}" for k in axes)


def _is_point(row: Mapping[str, Any], point: Mapping[str, float]) -> bool:
    return all(np.isclose(float(row[k]), v) for k, v in point.items())


def _paper_kd_sentence() -> str:
    """The paper's own grid: its spread against its seed-to-seed scatter (paper.md 6, 7.2)."""
    p = PAPER_KD_GRID
    z = (p["max"] - p["mean"]) / _PAPER_SEED_SD
    ratio = p["sd"] / _PAPER_SEED_SD
    return (
        f"The paper's {p['runs']} KD-grid runs, scored on the test set, had mean {sig(p['mean'])} "
        f"% (sd {sig(p['sd'])} pp) and their best, {sig(p['max'])} % at "
        f"{_point(p['best'], p['best'])}, lies {sig(z, 3)} seed-to-seed sds above that mean "
        f"(sd of its ten KD runs with one setting: {sig(_PAPER_SEED_SD)} pp); the grid's spread "
        f"is {sig(ratio, 3)}x that scatter, so "
        + (
            "one run per point cannot single out its best point."
            if ratio < 2
            else "its points differ by more than repeated runs do."
        )
    )


def _one_grid(name: str, frame: Any) -> tuple[str, list[float]]:
    """The sentences about one grid's results, and its validation accuracies."""
    grid = get(name)
    done = frame.dropna(subset=[VAL, TEST]) if len(frame) else frame
    label = f"**{name} grid** ({grid.method}, {_names([AXIS_LABELS[k] for k in grid.axes])})"
    if not len(done):
        return f"{label}: no point finished.", []
    vals = [float(v) for v in done[VAL]]
    head = f"{label}: {len(done)} of the paper's {grid.size} points."
    chosen_rows = [r for _, r in done.iterrows() if _is_point(r, grid.chosen)]
    chosen_text = _point(grid.chosen, grid.axes)
    if len(done) == 1:
        r = done.iloc[0]
        return (
            f"{head} One point only ({_point(r, grid.axes)}): validation {sig(r[VAL])} %, test "
            f"{sig(r[TEST])} %; no choice to make in this profile.",
            vals,
        )
    if len(set(vals)) == 1:
        tests = [float(v) for v in done[TEST]]
        lo, hi = sig(min(tests)), sig(max(tests))
        return (
            f"{head} All of them score {sig(vals[0])} % on validation (test "
            f"{lo if lo == hi else lo + ' to ' + hi} %): no point is best on validation, so this "
            "profile chooses nothing and which point is best is **not settled** here.",
            vals,
        )
    best = best_points(done)
    bv, bt = best["validation"], best["test"]
    tied = int((done[VAL] == bv[VAL]).sum()) - 1
    parts = [
        head,
        f"Best on validation: {_point(bv, grid.axes)} ({sig(bv[VAL])} % validation, "
        f"{sig(bv[TEST])} % test"
        + (f"; tied with {tied} other point(s), the first in grid order shown" if tied else "")
        + ").",
    ]
    if bv[TEST] >= bt[TEST]:
        parts.append("Choosing on the test set, as the paper did, picks the same point.")
    else:
        parts.append(
            f"Choosing on the test set, as the paper did, picks {_point(bt, grid.axes)} instead, "
            f"whose test accuracy is {sig(float(bt[TEST] - bv[TEST]))} pp above the validation "
            "choice's: what choosing on test adds to the reported accuracy on this grid."
        )
    if not chosen_rows:
        parts.append(f"The paper's choice ({chosen_text}) did not run in this profile.")
    elif _is_point(bv, grid.chosen):
        parts.append(f"The validation choice **is** the paper's ({chosen_text}).")
    else:
        c = chosen_rows[0]
        parts.append(
            f"The validation choice **is not** the paper's ({chosen_text}: {sig(c[VAL])} % "
            f"validation, {signed(float(c[VAL] - bv[VAL]))} pp from the best)."
        )
    spread = max(vals) - min(vals)
    n_val = done["val_images"].dropna() if "val_images" in done else []
    if len(n_val):
        lo, hi = wilson(float(bv[VAL]), int(n_val.iloc[0]))
        half = (hi - lo) / 2
        parts.append(
            f"The points span {sig(min(vals))} to {sig(max(vals))} % on validation "
            f"({sig(spread)} pp) against ±{sig(half)} pp of sampling error on "
            f"{int(n_val.iloc[0]):,} validation images: "
            + (
                "within it, so one run per point cannot tell the best point from the others "
                "and which is best is **not settled** here."
                if spread <= half
                else "beyond it, though the seed-to-seed scatter (one run per point) is not "
                "measured, so which is best is **not settled** by this alone."
            )
        )
    if name == "kd":
        tests = [float(v) for v in done[TEST]]
        sd = statistics.stdev(tests) if len(tests) >= 2 else float("nan")
        parts.append(
            f"On the test set our {len(tests)} points have mean {sig(statistics.fmean(tests))} % "
            f"(sd {sig(sd)} pp), the paper's {PAPER_KD_GRID['runs']} points "
            f"{sig(PAPER_KD_GRID['mean'])} % "
            f"(sd {sig(PAPER_KD_GRID['sd'])} pp)."
        )
    return " ".join(parts), vals


def hyperparameter_grids(frames: Mapping[str, Any], *, profile: str, data: str) -> str:
    """Notebook 09: each grid's point best on validation beside the point best on test (as the
    paper chose) and the paper's choice, its spread against the validation set's sampling error,
    and the paper's KD grid against its own seed-to-seed scatter. `frames`: {grid name: the result
    table of `igkd.hp_grids.run`} (columns: the grid's axes, val_accuracy, test_accuracy (%),
    val_images)."""
    if not frames:
        return f"No hyperparameter grid ran in profile `{profile}`: nothing to report."
    sentences, means = [], {}
    for name, frame in frames.items():
        text, vals = _one_grid(name, frame)
        sentences.append("- " + text)
        if vals:
            means[name] = statistics.fmean(vals)
    runs = sum(len(f) for f in frames.values())
    head = (
        f"Profile `{profile}` on {data}: the paper's grids, {runs} run(s) in all, each point one "
        "run (seed 0) scored on a validation split of the training set; the test accuracy is "
        "shown only to compare with choosing on the test set, as the paper did."
    )
    chance = _chance_note(means)
    body = [head + (" " + chance if chance else ""), "\n".join(sentences)]
    if "kd" in frames:
        body.append(_paper_kd_sentence())
    return "\n\n".join(body)
