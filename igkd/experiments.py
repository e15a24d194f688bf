"""Glue for the experiment notebooks (04-06, 09): run grids, accuracies per method, tables and
plots that put our numbers beside the paper's. The runs themselves go through `igkd.sweep`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from igkd import losses, models, paper, profiles, stats
from igkd.errors import ConfigError


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}; use a positive integer or None (the profile's)")


def runs_for(kind: str, profile: str | None, runs: int | None) -> int:
    """`runs` if given, else the profile's count for `kind` (ablation_runs, monte_carlo_runs, ...)."""
    if runs is not None:
        _check_count("runs", runs)
        return runs
    return profiles.get(profile).experiments[kind]


def setting(kind: str, profile: str | None, value: object, default: object) -> object:
    """A notebook parameter: `value` if given (not None), else the profile's `kind` (e.g.
    ablation_methods), else the paper's `default`. The quick profile narrows grids this way."""
    if kind not in profiles.EXPERIMENT_KEYS:
        raise ConfigError(
            f"unknown experiment setting {kind!r}; use one of profiles.EXPERIMENT_KEYS"
        )
    if value is not None:
        return value
    return profiles.get(profile).experiments.get(kind, default)


def epochs_for(profile: str | None, epochs: int | None) -> tuple[int | None, str]:
    """Epochs per experiment run (04-06) and the phrase the notebooks print: `epochs` if given, else
    the profile's `experiment_epochs`; None means the student recipe's own epochs."""
    if epochs is not None:
        _check_count("epochs", epochs)
    epochs = setting("experiment_epochs", profile, epochs, None)
    return epochs, (f"{epochs} epoch(s) per run" if epochs else "the student recipe's epochs")


def trained_epochs(profile: str | None, epochs: int | None) -> int:
    """The epochs an experiment run really trains: `epochs`, else the profile's `experiment_epochs`,
    else (None there too) its student recipe's own. For tables and matching; a run's config keeps
    None so that its cache key does not change."""
    return epochs_for(profile, epochs)[0] or int(profiles.get(profile).student_recipe["epochs"])


def data_share(profile: str | None, share: float | None) -> float:
    """The share of the training set each experiment run trains on: `share` if given, else the
    profile's `experiment_data_share` (quick: 0.2), else 1 (all of it)."""
    share = setting("experiment_data_share", profile, share, 1.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError(f"data_share={share!r}; use a fraction in (0, 1] or None (the profile's)")
    return float(share)


def ablation_settings(
    profile: str | None,
    compression: float | str | None = None,
    epochs: int | None = None,
    share: float | None = None,
) -> tuple[str, int | None, float]:
    """The ablation's (chapter 04's main grid) student size label, epochs per run and training
    share: each given value wins; else the profile's `ablation_regime` (the name of one of its
    `regimes`, the one chapter 11 chose: quick's 4.1x, 20 epochs on 5 %); else 4.1x (the paper's)
    at `experiment_epochs` on `experiment_data_share`, like the other experiments."""
    name = setting("ablation_regime", profile, None, None)
    if name is not None:
        known = {r.name: r for r in profiles.get(profile).experiments.get("regimes", ())}
        if name not in known:
            raise ConfigError(
                f"profile {profiles.resolve(profile)!r}: ablation_regime={name!r} is none of its "
                f"regimes {list(known)}"
            )
        regime = known[name]
        compression = regime.compression if compression is None else compression
        epochs = regime.epochs if epochs is None else epochs
        share = regime.data_share if share is None else share
    label = models.compression_row(4.1 if compression is None else compression).label
    epochs, _ = epochs_for(profile, epochs)
    return label, epochs, data_share(profile, share)


def subset(share: float, split_seed: int = 0) -> dict:
    """`pipeline.student_run` settings that train on `share` of the training set, the same
    stratified draw (`split_seed`) for every run; {} for all of it, which keeps the runs' hashes."""
    return {} if share >= 1 else {"train_fraction": share, "split_seed": split_seed}


def grid(methods: Sequence[str], seeds: Iterable[int], **common: object) -> list[dict]:
    """Keyword arguments of `pipeline.student_run` for every (seed, method), seed-major so that a
    sweep cut short still has every method at the first seeds."""
    if not methods:
        raise ConfigError("methods is empty; name at least one of " + ", ".join(paper.METHODS))
    return [
        {**common, "method": m, "seed": s} for s, m in itertools.product(list(seeds), list(methods))
    ]


def named_settings(name: str) -> dict[str, float]:
    """The paper version's settings `name` (`paper.SETTINGS`: v2, v1, pre-v1-p0.5, pre-v1-p0.25):
    alpha, temperature, overlay_prob. ConfigError in one line, listing the names, for another."""
    if not isinstance(name, str) or name not in paper.SETTINGS:
        raise ConfigError(
            f"settings={name!r}; use one of {', '.join(paper.SETTINGS)} (paper.SETTINGS)"
        )
    return dict(paper.SETTINGS[name])


def settings_overrides(name: str, method: str) -> dict[str, float]:
    """The StudentConfig overrides that give `method` the settings `name`: alpha and temperature
    where the method distils (KD), overlay_prob where it overlays IG maps, and only where they
    differ from the preset, so that "v2" gives {} and its runs keep their cache hashes. The plain
    student gets {} under every name."""
    wanted = named_settings(name)
    preset = losses.method(method)
    parts = []
    if preset.alpha > 0:
        parts += ["alpha", "temperature"]
    if preset.overlay_prob > 0:
        parts.append("overlay_prob")
    return {k: wanted[k] for k in parts if wanted[k] != getattr(preset, k)}


def with_settings(configs: Sequence[Mapping], name: str) -> list[dict]:
    """`configs` (keyword arguments of `pipeline.student_run`, e.g. from `grid`) with the overrides
    of the settings `name` for each config's method (`settings_overrides`)."""
    named_settings(name)
    return [{**c, **settings_overrides(name, str(c["method"]))} for c in configs]


def settings_purpose(experiment: str, name: str, profile: str | None, **params: object) -> dict:
    """The purpose tag of an experiment's runs under the settings `name`: `config.purpose` as
    before for "v2" (the tags of existing runs stay valid), with `settings=name` added for an
    earlier version, so that a count of the v2 experiment can tell these runs apart."""
    from igkd.config import purpose

    named_settings(name)
    extra = {} if name == "v2" else {"settings": name}
    return purpose(experiment, profile, **params, **extra)


def sweep_reference(name: str) -> dict[str, dict[str, float]]:
    """The paper's sweep table for the settings `name`: ESM Table 13 (`paper.SWEEP`) for v2, the v1
    sweep (`paper.SWEEP_V1`) for v1, {} for settings the paper ran no sweep with."""
    named_settings(name)
    return {"v2": paper.SWEEP, "v1": paper.SWEEP_V1}.get(name, {})


def settings_text(name: str) -> str:
    """One line naming the settings and where they come from, e.g. for a notebook's printout."""
    s = named_settings(name)
    return (
        f"settings {name!r}: alpha {s['alpha']:g}, T {s['temperature']:g}, p {s['overlay_prob']:g}"
        f" ({paper.SETTINGS_SOURCE[name]})"
    )


def accuracies(
    results: Sequence[Mapping], by: str = "method", key: str = "final_test_accuracy"
) -> dict[str, list[float]]:
    """{value of `by`: [metric of each run]} from run metrics, in first-seen order."""
    out: dict[str, list[float]] = {}
    for r in results:
        out.setdefault(str(r[by]), []).append(float(r[key]))
    return out


def teacher_accuracy(results: Sequence[Mapping]) -> float | None:
    """The teacher's test accuracy (%) recorded by the runs, or None when no run used a teacher
    (a grid of plain `student` runs never trains one)."""
    return next(
        (r["teacher_test_accuracy"] for r in results if r.get("teacher_test_accuracy")), None
    )


def beside_paper(ours: Mapping[str, Sequence[float]], theirs: Mapping[str, Sequence[float]]):
    """Mean, sd, 95 % CI, min, max and n per method: ours and the paper's side by side (%)."""
    cols = ["n", "mean", "sd", "ci_low", "ci_high", "min", "max"]
    a = stats.summarize(ours)[cols]
    b = stats.summarize({m: v for m, v in theirs.items() if m in ours})[cols]
    table = pd.concat({"ours": a, "paper": b}, axis=1)
    return table.round(4)


def plot_means(
    results: Mapping[str, Mapping[str, Sequence[float]]], ax: Axes | None = None, ylabel: str = ""
) -> Axes:
    """Mean and 95 % CI per method, one marker series per source (e.g. {"ours": ..., "paper": ...})."""
    ax = ax or plt.subplots(figsize=(8, 3.5))[1]
    methods = list(next(iter(results.values())))
    width = 0.8 / len(results)
    for k, (name, res) in enumerate(results.items()):
        rows = [stats.describe(res[m]) if m in res else None for m in methods]
        x = np.arange(len(methods)) + (k - (len(results) - 1) / 2) * width
        mean = np.array([r["mean"] if r else np.nan for r in rows])
        lo = np.array([r["ci_low"] if r else np.nan for r in rows])
        hi = np.array([r["ci_high"] if r else np.nan for r in rows])
        err = np.nan_to_num(np.vstack([mean - lo, hi - mean]))
        ax.errorbar(x, mean, yerr=err, fmt="o", capsize=3, label=name)
    ax.set_xticks(range(len(methods)), methods, rotation=30)
    ax.set_ylabel(ylabel or "test accuracy (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return ax


def sweep_table(
    results: Sequence[Mapping], reference: Mapping[str, Mapping[str, float]] | None = None
) -> pd.DataFrame:
    """Per (compression, method): n, mean and 95 % CI of our runs beside the paper's sweep table
    (`reference`: label -> method -> %, None for `paper.SWEEP`; `paper.SWEEP_V1` for v1)."""
    reference = paper.SWEEP if reference is None else reference
    rows = []
    groups: dict[tuple[str, str], list[float]] = {}
    for r in results:
        groups.setdefault((r["compression"], r["method"]), []).append(r["final_test_accuracy"])
    for (label, method), acc in groups.items():
        d = stats.describe(acc)
        rows.append(
            {
                "compression": label,
                "ratio": models.COMPRESSION_TABLE[label].ratio,
                "parameters": models.COMPRESSION_TABLE[label].parameters,
                "method": method,
                "n": d["n"],
                "mean": d["mean"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "paper": reference.get(label, {}).get(method, np.nan),
            }
        )
    return pd.DataFrame(rows).sort_values(["ratio", "method"]).reset_index(drop=True)


def plot_sweep(table: pd.DataFrame, teacher: float, ax: Axes | None = None) -> Axes:
    """Accuracy relative to the teacher (percentage points) against compression, log axis:
    ours (solid, 95 % CI band when n >= 2) and the paper's relative to its teacher (dashed)."""
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    for method, t in table.groupby("method", sort=False):
        line = ax.plot(t["ratio"], t["mean"] - teacher, marker="o", label=f"{method} (ours)")[0]
        ax.fill_between(
            t["ratio"],
            t["ci_low"] - teacher,
            t["ci_high"] - teacher,
            color=line.get_color(),
            alpha=0.15,
        )
        if t["paper"].notna().any():
            ax.plot(
                t["ratio"],
                t["paper"] - paper.TEACHER_ACCURACY,
                ls="--",
                marker="x",
                color=line.get_color(),
                alpha=0.7,
                label=f"{method} (paper)",
            )
    ratios = sorted(table["ratio"].unique())
    ax.set_xscale("log")
    ax.set_xticks(ratios, [f"{r:.3g}x" for r in ratios])
    ax.minorticks_off()
    ax.axhline(0, color="k", lw=1)
    ax.set_xlabel("compression factor (teacher parameters / student parameters)")
    ax.set_ylabel("accuracy - teacher's (pp)")
    ax.legend(fontsize=7, ncol=2)
    return ax


def student_summary(metrics: dict) -> dict:
    """One column of a result table: our student beside the paper's numbers for the same setting."""
    method, label = metrics["method"], metrics["compression"]
    runs_ = paper.ABLATION_RUNS.get(method)
    return {
        "profile": metrics["environment"]["profile"],
        "data": metrics["data"],
        "method": method,
        "compression": f"{label}x ({metrics['compression_ratio']:.4g})",
        "parameters": metrics["parameters"],
        "epochs": metrics["epochs"],
        "training time (min)": round(metrics["train_seconds"] / 60, 1),
        "test accuracy, final (%)": round(metrics["final_test_accuracy"], 2),
        "test accuracy, best epoch (%)": round(metrics["best_test_accuracy"], 2),
        "teacher, ours (%)": round(metrics["teacher_test_accuracy"], 2)
        if metrics.get("teacher_test_accuracy")
        else None,
        "paper: ten-run mean at 4.1x (%)": round(paper.ablation_mean(method), 2)
        if runs_ and label == "4.1"
        else None,
        "paper: best of ten at 4.1x (%)": max(runs_) if runs_ and label == "4.1" else None,
        "paper: sweep table (%)": paper.SWEEP.get(label, {}).get(method),
        "paper: teacher (%)": paper.TEACHER_ACCURACY,
    }
