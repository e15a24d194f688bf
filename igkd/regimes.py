"""What a CPU can test: training regimes compared by how much they can tell the methods apart.

A regime is a student size, a share of the training set and an epoch count (`profiles.Regime`).
The study trains the plain student and KD_IG on a few seeds in each regime, then asks, per regime:
how far apart are the methods, how much do seeds scatter, and how many paired seeds (and CPU hours)
would it take to see a 1 pp or a 0.5 pp difference. The regime with the narrowest confidence
interval on KD_IG - student for the CPU budget of the quick ablation is the one `quick` should use.

Scores: the final epoch's test accuracy (the paper's), or the mean of the last `last` epochs' test
accuracy, a variance reducer (seed noise of one evaluation averages out over epochs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from igkd import experiments, profiles, stats
from igkd.errors import ConfigError
from igkd.profiles import Regime

ALPHA, POWER = 0.05, 0.80
EFFECTS = (1.0, 0.5)  # differences (pp) the power table asks about


def regimes_for(profile: str | None, names: Sequence[str] | None = None) -> list[Regime]:
    """The profile's regimes (`experiments["regimes"]`), or those of them named in `names`."""
    known = list(profiles.get(profile).experiments.get("regimes", ()))
    if not known:
        raise ConfigError(f"profile {profiles.resolve(profile)!r} defines no regimes")
    if names is None:
        return known
    by_name = {r.name: r for r in known}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"unknown regime(s) {unknown}; the profile has {list(by_name)}")
    return [by_name[n] for n in names]


def in_use(profile: str | None, regimes: Sequence[Regime]) -> Regime | None:
    """The regime the profile's ablation (chapter 04's main grid: `experiments.ablation_settings`,
    its `ablation_regime` or else 4.1x at `experiment_epochs` on `experiment_data_share`) trains
    in, or None if none of `regimes` is."""
    size, epochs, share = experiments.ablation_settings(profile)
    epochs = experiments.trained_epochs(profile, epochs)
    for r in regimes:
        if r.compression == size and r.epochs == epochs and math.isclose(r.data_share, share):
            return r
    return None


def grid(
    regimes: Sequence[Regime], methods: Sequence[str], seeds: Iterable[int], profile: str
) -> list[dict]:
    """`pipeline.student_run` keyword arguments for every (seed, regime, method), seed-major: a
    study cut short still has every regime at its first seeds, which is what a variance needs."""
    out = []
    for s in list(seeds):
        for r in regimes:
            common = {"profile": profile, **r.settings()}
            out.extend(experiments.grid(methods, [s], **common))
    return out


def _history(entry: Mapping) -> pd.DataFrame:
    return pd.read_csv(Path(entry["run_path"]) / "history.csv")


def score(history: pd.DataFrame, last: int = 1) -> float:
    """Mean test accuracy (%) of the last `last` epochs (1: the final epoch's, the paper's score)."""
    if not isinstance(last, int) or last < 1:
        raise ConfigError(f"last={last!r}; use a positive number of epochs")
    return float(history["test_accuracy"].tail(last).mean())


def curves(entries: Sequence[Mapping], regimes: Sequence[Regime]) -> pd.DataFrame:
    """One row per (regime, method, seed, epoch): image-steps so far and test accuracy (%).

    `entries` are `sweep.run_many` results of `grid(regimes, ...)` in the same order."""
    rows = []
    for e in entries:
        regime = _regime_of(e, regimes)
        h = _history(e)
        for _, row in h.iterrows():
            rows.append(
                {
                    "regime": regime.name,
                    "method": e["method"],
                    "seed": e["config"]["seed"],
                    "epoch": int(row["epoch"]),
                    "image_steps": int(row["epoch"]) * int(e["train_images"]),
                    "test_accuracy": float(row["test_accuracy"]),
                }
            )
    return pd.DataFrame(rows)


def _regime_of(entry: Mapping, regimes: Sequence[Regime]) -> Regime:
    c = entry["config"]
    for r in regimes:
        if all(c.get(k) == v for k, v in r.settings().items()):
            return r
    raise ConfigError(f"run {entry.get('run_path')} belongs to none of the regimes")


def table(
    entries: Sequence[Mapping],
    regimes: Sequence[Regime],
    *,
    reference: str = "student",
    treatment: str = "KD_IG",
    last: int = 1,
    budget_hours: float = 1.0,
    ablation_methods: int = 4,
) -> pd.DataFrame:
    """One row per regime: accuracy, seed sd, the paired difference treatment - reference with its
    CI and p, the seeds needed for each of EFFECTS, the CPU cost of a run (training and per-epoch
    scoring; training only for runs made before igkd recorded scoring time, as `cost counts`
    says), and what the quick ablation (`ablation_methods` methods x n seeds, at least 3) reaches
    within `budget_hours`.

    Without treatment runs the sd of the paired difference is estimated as sqrt(2) x the
    reference's seed sd (independent seeds), and the row says so in `sd_source`.
    """
    scores: dict[str, dict[str, dict[int, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for e in entries:
        r = _regime_of(e, regimes)
        s = score(_history(e), min(last, int(e["epochs"])))
        scores.setdefault(r.name, {}).setdefault(e["method"], {})[e["config"]["seed"]] = s
        threads = e.get("environment", {}).get("threads") or 1
        scored = "eval_seconds" in e  # recorded since igkd 2026-12-03; scoring is part of the cost
        spent = float(e["train_seconds"]) + (float(e["eval_seconds"]) if scored else 0.0)
        seconds.setdefault(r.name, []).append((scored, spent * threads))
    rows = []
    for r in regimes:
        if r.name not in scores:
            continue
        by = scores[r.name]
        ref = by.get(reference, {})
        tr = by.get(treatment, {})
        paired = sorted(set(ref) & set(tr))
        row: dict[str, object] = {"regime": r.name, "what": r.label()}
        ref_v = np.array([ref[k] for k in sorted(ref)])
        row[f"{reference} mean (%)"] = float(ref_v.mean()) if ref_v.size else math.nan
        row[f"{reference} seed sd (pp)"] = float(ref_v.std(ddof=1)) if ref_v.size > 1 else math.nan
        if tr:
            tr_v = np.array([tr[k] for k in sorted(tr)])
            row[f"{treatment} mean (%)"] = float(tr_v.mean())
        else:
            row[f"{treatment} mean (%)"] = math.nan
        row["seeds"] = len(paired) if paired else ref_v.size
        if len(paired) >= 2:
            d = np.array([tr[k] - ref[k] for k in paired])
            test = sps.ttest_1samp(d, 0.0)
            row["difference (pp)"] = float(d.mean())
            row["difference sd (pp)"] = sd = float(d.std(ddof=1))
            row["95 % half-width (pp)"] = stats.half_width(sd, len(d))
            row["p (paired t)"] = float(test.pvalue)
            row["sd_source"] = f"paired {treatment} - {reference}, {len(d)} seeds"
        else:
            sd = math.sqrt(2) * row[f"{reference} seed sd (pp)"]
            row["difference (pp)"] = math.nan
            row["difference sd (pp)"] = sd
            row["95 % half-width (pp)"] = math.nan
            row["p (paired t)"] = math.nan
            row["sd_source"] = f"sqrt(2) x {reference}'s seed sd ({ref_v.size} seeds; no pairs yet)"
        if sd == 0:  # e.g. every student at chance: nothing scatters, nothing can be estimated
            sd = math.nan
            row["difference sd (pp)"] = sd
            row["sd_source"] = "every run scored the same: no scatter to estimate"
        for eff in EFFECTS:
            row[f"seeds for {eff:g} pp"] = stats.seeds_needed(sd, eff) if sd > 0 else None
        # Runs that recorded their scoring time give the whole cost; older ones only training's.
        full = [t for scored, t in seconds[r.name] if scored]
        cost = float(np.mean(full or [t for _, t in seconds[r.name]])) / 3600
        row["CPU hours per run"] = cost
        row["cost counts"] = "training and scoring" if full else "training only (older runs)"
        n_budget = max(3, int(budget_hours / (ablation_methods * cost))) if cost > 0 else 3
        row["ablation seeds in budget"] = n_budget
        # The floor of 3 seeds can overrun the budget; this column shows by how much.
        row["ablation CPU hours"] = n_budget * ablation_methods * cost
        row["ablation half-width (pp)"] = stats.half_width(sd, n_budget) if sd == sd else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("regime")


def paper_row(reference: str = "student", treatment: str = "KD_IG") -> pd.DataFrame:
    """The same columns for the paper's own ten runs per method (100 epochs, all data, a GPU),
    pairing run i with run i as the paper does: the scale a CPU regime is measured against."""
    from igkd import paper

    ref = np.array(paper.ABLATION_RUNS[reference])
    tr = np.array(paper.ABLATION_RUNS[treatment])
    d = tr - ref
    sd = float(d.std(ddof=1))
    row = {
        "what": "the paper: 4.1x, 100 epochs on all the data (GPU)",
        f"{reference} mean (%)": float(ref.mean()),
        f"{reference} seed sd (pp)": float(ref.std(ddof=1)),
        f"{treatment} mean (%)": float(tr.mean()),
        "seeds": len(d),
        "difference (pp)": float(d.mean()),
        "difference sd (pp)": sd,
        "95 % half-width (pp)": stats.half_width(sd, len(d)),
        "p (paired t)": float(sps.ttest_1samp(d, 0.0).pvalue),
        "sd_source": f"paired {treatment} - {reference}, the paper's {len(d)} runs",
    }
    for eff in EFFECTS:
        row[f"seeds for {eff:g} pp"] = stats.seeds_needed(sd, eff)
    return pd.DataFrame([row], index=pd.Index(["paper"], name="regime"))


def choose(power: pd.DataFrame, min_seeds: int = 2) -> str:
    """The regime whose quick ablation reaches the narrowest CI on the difference, among those
    whose sd rests on at least `min_seeds` seeds: an sd from 2 seeds (1 degree of freedom) can be
    off by a factor of 30 either way, so the study's own seed count is the fair bar."""
    widths = power.loc[power["seeds"] >= min_seeds, "ablation half-width (pp)"].dropna()
    if widths.empty:
        raise ConfigError(
            f"no regime has a variance estimate from {max(min_seeds, 2)} seeds or more yet"
        )
    return str(widths.idxmin())


def plot_curves(c: pd.DataFrame, ax=None):
    """Test accuracy against image-steps (epochs x training images), one line per regime and
    method: the mean over seeds, with the seeds' range shaded."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {
        m: s for m, s in zip(sorted(c["method"].unique()), ["-", "--", ":", "-."], strict=False)
    }
    for i, (regime, part) in enumerate(c.groupby("regime", sort=False)):
        for method, g in part.groupby("method", sort=False):
            by = g.groupby("image_steps")["test_accuracy"]
            mean, lo, hi = by.mean(), by.min(), by.max()
            colour = colours[i % len(colours)]
            ax.plot(
                mean.index,
                mean.values,
                styles.get(method, "-"),
                color=colour,
                marker="o",
                ms=3,
                label=f"{regime} · {method}",
            )
            ax.fill_between(mean.index, lo.values, hi.values, color=colour, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("image-steps (epochs x training images)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, ncol=2)
    return ax


def conclusion(
    power: pd.DataFrame,
    *,
    profile: str,
    data: str,
    budget_hours: float,
    reference: str = "student",
    treatment: str = "KD_IG",
    used: Regime | None = None,
    ablation_runs: int | None = None,
    min_seeds: int = 2,
) -> str:
    """The chapter's closing paragraph, from the power table: which regime gives the narrowest
    CI on treatment - reference within the budget, what was observed there, and whether any
    regime can see 1 pp or 0.5 pp with the seeds a CPU can afford. With `used` (`in_use`) and
    `ablation_runs` (the profile's seeds per method) it also says whether the profile's
    experiments train in the chosen regime with the seeds the budget allows."""
    from igkd.conclusions import sig, signed

    if power.empty:
        return f"Profile `{profile}` has no finished regime runs yet: nothing can be said."
    try:
        best = choose(power, min_seeds)
    except ConfigError:
        return (
            f"In profile `{profile}` ({data}) no regime has a usable variance estimate (fewer "
            "than two seeds, or every run scored the same, as students at chance do), so this "
            "profile cannot tell how many seeds a difference would need: "
            + "; ".join(f"{k}: {v}" for k, v in power["sd_source"].items())
            + "."
        )
    row = power.loc[best]
    seeds_1 = row[f"seeds for {EFFECTS[0]:g} pp"]
    text = (
        f"In profile `{profile}` on {data}, the regime with the narrowest 95 % confidence interval "
        f"on {treatment} - {reference} for a {sig(budget_hours)}-CPU-hour ablation is "
        f"**{best}** ({row['what']}): {int(row['ablation seeds in budget'])} seeds per method "
        f"would give a half-width of {sig(row['ablation half-width (pp)'])} pp "
        f"(sd of the paired difference {sig(row['difference sd (pp)'])} pp, "
        f"{row['sd_source']}; {sig(row['CPU hours per run'] * 60)} CPU-minutes per run)."
    )
    if row["difference (pp)"] == row["difference (pp)"]:
        text += (
            f" Observed there: {signed(row['difference (pp)'])} pp "
            f"(95 % CI ±{sig(row['95 % half-width (pp)'])}, paired t p = "
            f"{sig(row['p (paired t)'], 3)}, {int(row['seeds'])} seeds)."
        )
    reach = row["ablation half-width (pp)"]
    goal = 0.5
    text += (
        f" Detecting 1 pp there needs {int(seeds_1)} paired seeds (alpha 0.05, power 0.8)"
        if seeds_1 == seeds_1 and seeds_1 is not None
        else ""
    )
    text = text.rstrip(".") + "."
    text += f" The aim of a half-width of {sig(goal)} pp or less is " + (
        "reached." if reach <= goal else f"not reached ({sig(reach)} pp)."
    )
    early = power[(power["seeds"] < min_seeds) & power["ablation half-width (pp)"].notna()]
    if not early.empty:
        text += (
            f" Not comparable yet, with fewer than {min_seeds} seeds: "
            + ", ".join(
                f"{k} ({int(r['seeds'])} seeds, provisional half-width "
                f"{sig(r['ablation half-width (pp)'])} pp)"
                for k, r in early.iterrows()
            )
            + "."
        )
    others = power.drop(index=[best, *early.index])["ablation half-width (pp)"].dropna()
    if not others.empty:
        text += (
            " The other regimes reach "
            + ", ".join(f"{k} {sig(v)} pp" for k, v in others.items())
            + "."
        )
    spent = row.get("ablation CPU hours", math.nan)
    if spent > budget_hours:
        text += (
            f" At the floor of 3 seeds that ablation takes {sig(spent)} CPU-hours, over the "
            f"budget of {sig(budget_hours)}."
        )
    if used is not None or ablation_runs is not None:
        text += " " + _profile_verdict(best, row, used, ablation_runs, spent > budget_hours)
    return text


def _profile_verdict(
    best: str, row: pd.Series, used: Regime | None, runs: int | None, over: bool
) -> str:
    if used is None:
        text = "The profile's ablation (chapter 04) trains in none of these regimes."
    elif used.name == best:
        text = f"The profile's ablation (chapter 04) trains in {best}, the chosen regime."
    else:
        text = (
            f"The profile's ablation (chapter 04) trains in {used.name}, not in the chosen "
            f"{best}: the profile should move there."
        )
    if runs is not None:
        allowed = int(row["ablation seeds in budget"])
        text += f" Its ablation runs {runs} seeds per method; " + (
            "there even the floor of 3 overruns the budget."
            if over
            else f"the budget allows {allowed} there."
        )
    return text
