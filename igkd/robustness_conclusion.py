"""Chapter 10's closing paragraph (`conclusion`), assembled from its numbers only: whether the IG
overlay improves robustness to corruptions, by how much and how sure we are, and what temperature
scaling does to calibration; with the summary table's columns (`SUMMARY_COLUMNS`) it reads and the
caption phrase shared by chapter 10's tables (`applied`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from igkd.overlay_stats import ALL, ALPHA, CLEAN, DROP, IG, NO_IG

if TYPE_CHECKING:
    import pandas as pd

SUMMARY_COLUMNS = (
    "group",
    "method",
    "seed",
    "family",
    "clean (%)",
    "corrupted (%)",
    "mCE (%)",
    "relative mCE (%)",
    "T",
    "ECE clean (%)",
    "ECE clean, T (%)",
    "ECE corrupted (%)",
    "ECE corrupted, T (%)",
)
CHANCE = 10.0  # % for CIFAR-10's 10 classes
CHANCE_MARGIN = 5.0  # pp: a group whose models all score below CHANCE + this counts as untrained


def applied(data: str) -> str:
    """How the corruptions meet the test images, for every table's caption: on top of the JPEG q75
    re-encoding for our copy of CIFAR-10."""
    if "JPEG q75" in data:
        return "corruptions applied on top of the JPEG q75 re-encoding"
    return "corruptions applied to the images as stored"


def _listing(names: Sequence[str], most: int = 4) -> str:
    names = list(names)
    if len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} more"
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _others(table: pd.DataFrame) -> pd.DataFrame:
    """The per-corruption rows of a family table (without clean, all corruptions, their gap)."""
    return table.drop(index=[k for k in (CLEAN, ALL, DROP) if k in table.index])


def _holm_text(per: pd.DataFrame, column: str) -> str:
    from igkd.conclusions import sig, signed

    if not len(per) or "p_holm" not in per or not per["p_holm"].notna().any():
        return ""
    hit = per[per["reject"].astype(bool)]
    if len(hit):
        shown = [f"{k} ({signed(v)} pp)" for k, v in hit[column].items()]
        return (
            f" After Holm's correction across the {len(per)} corruptions, {len(hit)} differ at "
            f"alpha {ALPHA}: {_listing(shown, 5)}."
        )
    return (
        f" After Holm's correction across the {len(per)} corruptions, none differs at alpha "
        f"{ALPHA} (smallest adjusted p = {sig(float(per['p_holm'].min()), 3)})."
    )


def _boot_p(row: pd.Series) -> str:
    """'p = x', or 'p <= x' at the smallest p that `n_boot` resamples can give."""
    from igkd.conclusions import sig

    floor = 1 / (1 + float(row.get("n_boot", math.inf)))
    return f"p ≤ {sig(floor, 3)}" if row["p"] <= floor * (1 + 1e-9) else f"p = {sig(row['p'], 3)}"


def _bootstrap_text(
    group: str, table: pd.DataFrame, members: Mapping[str, list[str]], single: bool
) -> str:
    from igkd.conclusions import sig, signed

    ig, free = members.get(IG, []), members.get(NO_IG, [])
    row = table.loc[ALL]
    d, lo, hi = row["difference (pp)"], row["ci_low"], row["ci_high"]
    text = (
        f"{group.capitalize()}: the {len(ig)} model(s) trained with the IG overlay "
        f"({_listing(ig)}) average **{signed(d)} pp** against the {len(free)} without it "
        f"({_listing(free)}) under corruption ({sig(row[IG + ' (%)'])} % vs "
        f"{sig(row[NO_IG + ' (%)'])} %; "
        f"95 % CI {signed(lo)} to {signed(hi)} pp, paired bootstrap over the "
        f"{int(row['images']):,} test images, {_boot_p(row)})"
    )
    if CLEAN in table.index:
        text += (
            f"; on clean images the difference is {signed(table.loc[CLEAN, 'difference (pp)'])} pp"
        )
    text += "."
    if lo > 0 or hi < 0:
        text += (
            f" Under corruption the overlay models are **{'better' if lo > 0 else 'worse'}** at "
            "the 95 % level."
        )
    else:
        text += " The 95 % CI holds 0: these models do not settle whether the overlay helps."
    if DROP in table.index:
        r = table.loc[DROP]
        if r["ci_low"] > 0:
            verdict = "so the overlay **improves robustness** beyond its clean-accuracy advantage"
        elif r["ci_high"] < 0:
            verdict = "so the overlay models **lose more** under corruption than the others do"
        else:
            verdict = (
                "so what the overlay buys under corruption is **not distinguishable from its clean "
                "difference**: no robustness gain beyond clean accuracy is shown"
            )
        text += (
            f" Corrupted minus clean, the difference changes by {signed(r['difference (pp)'])} pp "
            f"(95 % CI {signed(r['ci_low'])} to {signed(r['ci_high'])}), {verdict}."
        )
    text += _holm_text(_others(table), "difference (pp)")
    if single:
        text += (
            " One checkpoint per method: the interval covers the sampling of test images, not of "
            "training runs, so it says these checkpoints differ, not that the methods do."
        )
    return text


def _seeds_text(group: str, table: pd.DataFrame) -> str:
    from igkd.conclusions import comparison

    text = comparison(
        "IG overlay",
        "no overlay",
        table.loc[ALL].to_dict(),
        where=f" under corruption ({group}, family means per seed)",
    )
    return text + _holm_text(_others(table), "diff")


def _untrained(clean: pd.Series) -> bool:
    return bool(len(clean)) and float(clean.max()) < CHANCE + CHANCE_MARGIN


def conclusion(
    summary: pd.DataFrame,
    bootstrap: Mapping[str, pd.DataFrame | None] | None = None,
    seeds: Mapping[str, pd.DataFrame | None] | None = None,
    *,
    profile: str,
    data: str,
    images: int,
    corruptions: int,
    severities: Sequence[int],
    val_images: int | None = None,
    reference: str | None = None,
) -> str:
    """Chapter 10's closing paragraph (Markdown), assembled from its numbers only.

    `summary`: one row per model (index: its name) with the columns of `SUMMARY_COLUMNS`
    (accuracies and ECE in %, mCE in % of the reference); `bootstrap`: group -> the family table of
    `robustness_eval.family_bootstrap` (rows "clean", the corruptions, "all corruptions",
    "all corruptions - clean"; None where a group lacks one family); `seeds`: group ->
    `robustness_eval.seed_comparison`'s table (`stats.compare` columns), or None. `reference`
    names the mCE reference in words. Says whether the overlay improves robustness, by how much
    (pp, 95 % CI) and how sure we are (Holm); a group whose models are at chance, or a single
    model, gets a sentence instead of a verdict.
    """
    from igkd.conclusions import sig, signed

    sevs = _listing([str(s) for s in severities], most=5)
    where = (
        f"on {data} (profile `{profile}`, {images:,} test images; {corruptions} corruption(s) at "
        f"severit{'y' if len(severities) == 1 else 'ies'} {sevs}, {applied(data)})"
    )
    if summary is None or len(summary) == 0:
        return (
            f"No model could be evaluated {where}: no checkpoint folder held a student, and the run "
            "cache holds neither a finished student nor the teacher of this profile. Put the "
            "authors' files in a folder (`checkpoint_dir`) or train students first."
        )
    clean, corrupted = summary["clean (%)"].astype(float), summary["corrupted (%)"].astype(float)
    parts = [
        f"{len(summary)} model(s) were evaluated {where}: clean accuracy "
        f"{sig(clean.min())}-{sig(clean.max())} %, under corruption "
        f"{sig(corrupted.min())}-{sig(corrupted.max())} % (mean over corruptions and severities)."
    ]
    if len(summary) == 1:
        parts.append(
            f"Only one model ({summary.index[0]}) was evaluated, so nothing can be compared: "
            "whether the IG overlay buys robustness needs models with and without it."
        )
    elif _untrained(clean):
        parts.append(
            f"Every model scores below {sig(CHANCE + CHANCE_MARGIN)} % on clean images, within "
            f"{sig(CHANCE_MARGIN)} pp of chance ({sig(CHANCE)} %): they have learned too little in "
            "this profile for their robustness to mean anything, so no verdict is drawn."
        )
    groups = dict.fromkeys([*(bootstrap or {}), *(seeds or {})])
    for group in groups:
        rows = summary[summary["group"] == group]
        members = {fam: list(rows.index[rows["family"] == fam]) for fam in (IG, NO_IG)}
        if not (members[IG] and members[NO_IG]):
            if len(summary) > 1 and len(rows):
                missing = NO_IG if members[IG] else IG
                parts.append(
                    f"{group.capitalize()}: no model with {missing!r} among them, so the two "
                    "families cannot be compared."
                )
            continue
        if _untrained(rows["clean (%)"].astype(float)):
            if not _untrained(clean):
                parts.append(
                    f"{group.capitalize()}: every model scores within {sig(CHANCE_MARGIN)} pp of "
                    f"chance on clean images (at most {sig(float(rows['clean (%)'].max()))} %), "
                    "so their families are not compared."
                )
            continue
        table = (bootstrap or {}).get(group)
        if table is not None and ALL in table.index:
            single = bool((rows.groupby("method").size() == 1).all())
            parts.append(_bootstrap_text(group, table, members, single))
        table = (seeds or {}).get(group)
        if table is not None and ALL in table.index:
            parts.append(_seeds_text(group, table))
    if len(summary) > 1 and summary["mCE (%)"].notna().any() and not _untrained(clean):
        means = summary.groupby("family", sort=False)[["mCE (%)", "relative mCE (%)"]].mean()
        shown = [
            f"{fam} {sig(row['mCE (%)'])} %"
            + (
                f" (relative mCE {sig(row['relative mCE (%)'])} %)"
                if not np.isnan(row["relative mCE (%)"])
                else ""
            )
            for fam, row in means.dropna(subset=["mCE (%)"]).iterrows()
        ]
        parts.append(
            f"Mean mCE by family ({'reference: ' + reference if reference else 'see the table'}; "
            f"100 % = as robust as the reference): {_listing(shown)}."
        )
    ece = ["ECE clean (%)", "ECE clean, T (%)", "ECE corrupted (%)", "ECE corrupted, T (%)"]
    if summary[ece].notna().all(axis=None):
        e = summary[ece].astype(float).mean()
        fitted = f"{val_images:,} training images" if val_images else "training images"
        parts.append(
            f"Temperature scaling (one T per model, fitted on {fitted}, never the test set) moves "
            f"the mean ECE from {sig(e.iloc[0])} % to {sig(e.iloc[1])} % on clean images "
            f"({signed(e.iloc[1] - e.iloc[0])} pp) and from {sig(e.iloc[2])} % to "
            f"{sig(e.iloc[3])} % under corruption ({signed(e.iloc[3] - e.iloc[2])} pp)."
        )
    return " ".join(parts)
