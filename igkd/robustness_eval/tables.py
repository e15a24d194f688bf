"""Chapter 10's tables and statistics: heat map, severity and sweep curves, mCE, ECE, the IG-family bootstrap and seed test, summary records."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from igkd import corruptions as cifar_c
from igkd import robustness, stats
from igkd.errors import ConfigError
from igkd.robustness_eval.evaluation import (
    Key,
    Result,
)
from igkd.robustness_eval.setup import (
    PUBLISHED,
    RUN_CACHE,
)

# --- tables ----------------------------------------------------------------------------------------------


def rounded(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """`frame` with every float rounded to `digits` significant digits (the chapter's tables)."""

    def one(x: object) -> object:
        if isinstance(x, float | np.floating) and np.isfinite(x) and x != 0:
            return float(f"{x:.{digits}g}")
        return x

    return frame.map(one) if hasattr(frame, "map") else frame.applymap(one)


def caption(r: Result, what: str = "") -> str:
    """The line printed above every table: the profile, the data and how corruptions meet it."""
    return (
        (f"{what}. " if what else "")
        + f"Profile {r.settings.profile}; data: {r.data}, {r.images:,} test images; "
        + robustness.applied(r.data)
        + "."
    )


def heatmap_table(r: Result) -> pd.DataFrame:
    """Accuracy (%) at each corruption (rows, mean over the severities) for each model (columns),
    with a first row "clean"."""
    rows = {"clean": r.accuracy(("clean", 0))}
    for n in r.settings.corruptions:
        rows[n] = np.mean([r.accuracy((n, sev)) for sev in r.settings.severities], axis=0)
    return pd.DataFrame(rows, index=r.names).T.rename_axis("corruption")


def _groups(r: Result) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(r.models):
        out.setdefault((c.group, c.family), []).append(i)
    return out


def severity_table(r: Result) -> pd.DataFrame:
    """Accuracy (%) against severity (rows; 0 = clean) for each (group, family) of models
    (columns): the mean over the family's models and the corruptions."""
    cols = {}
    for (group, fam), idx in _groups(r).items():
        values = [r.accuracy(("clean", 0))[idx].mean()]
        for sev in r.settings.severities:
            values.append(
                np.mean([r.accuracy((n, sev))[idx].mean() for n in r.settings.corruptions])
            )
        cols[f"{group}: {fam} ({len(idx)})"] = values
    return pd.DataFrame(cols, index=pd.Index([0, *r.settings.severities], name="severity"))


def curve_table(r: Result, kind: str) -> pd.DataFrame:
    """Accuracy (%) of each model (columns) along the JPEG quality sweep (`kind` "jpeg", rows:
    quality, 95 first) or the Gaussian noise sweep ("noise", rows: sigma in pixel units)."""
    if kind == "jpeg":
        params, label = r.settings.jpeg_qualities, "JPEG quality"
    elif kind == "noise":
        params, label = r.settings.noise_sigmas, "noise sigma (pixels, 0..255)"
    else:
        raise ConfigError(f"kind={kind!r}; use 'jpeg' or 'noise'")
    rows = {p: r.accuracy((kind, p)) for p in params}
    return pd.DataFrame(rows, index=r.names).T.rename_axis(label)


def reference_for(r: Result, group: str, reference: str = "AT") -> tuple[str, list[int]]:
    """The mCE reference of `group`'s models: its plain students ("student", their errors averaged
    over their runs) if it has any, else its models of method `reference`, else the same search
    over every model; (its name, model indices), or ("", []) when none is found."""
    for pool in ([i for i, c in enumerate(r.models) if c.group == group], range(len(r.models))):
        for method in ("student", reference):
            idx = [i for i in pool if r.models[i].method == method]
            if not idx:
                continue
            label = r.models[idx[0]].name if len(idx) == 1 else f"{method} (mean of {len(idx)})"
            if r.models[idx[0]].group != group:
                label += f" of the {r.models[idx[0]].group} models"
            return label, idx
    return "", []


def _errors(r: Result, idx: Sequence[int]) -> tuple[dict[tuple[str, int], float], float]:
    """Top-1 errors (%) per (corruption, severity) and clean, averaged over the models `idx`."""
    errs = {k: float(100.0 - r.accuracy(k)[list(idx)].mean()) for k in r.corrupted_keys()}
    return errs, float(100.0 - r.accuracy(("clean", 0))[list(idx)].mean())


def summary_table(r: Result, reference: str = "AT") -> pd.DataFrame:
    """One row per model: group, method, seed, family, clean and mean corrupted accuracy (%), mCE
    and relative mCE (%, Hendrycks & Dietterich, against `reference_for` the model's group; NaN
    unless all 15 benchmark corruptions were evaluated; relative mCE as `relative_mce`), the
    temperature T and ECE (%) clean and corrupted (mean over the corrupted sets) before and after
    temperature scaling. `attrs`: "reference" says which reference each group used, "relative"
    which corruptions relative mCE left out ('' when none)."""
    rows, refs, excluded = [], {}, {}
    ckeys = r.corrupted_keys()
    bench = all(n in r.settings.corruptions for n in cifar_c.BENCHMARK)
    for i, c in enumerate(r.models):
        if c.group not in refs:
            refs[c.group] = reference_for(r, c.group, reference)
        label, idx = refs[c.group]
        mce = rel = math.nan
        if bench and idx:
            ref_err, ref_clean = _errors(r, idx)
            own, own_clean = _errors(r, [i])
            try:
                mce = robustness.mce(own, ref_err)
            except ConfigError:  # the reference is never wrong on some corruption
                pass
            rel, skipped = relative_mce(own, ref_err, own_clean, ref_clean)
            excluded.setdefault(c.group, skipped)
        rows.append(
            {
                "model": c.name,
                "group": c.group,
                "method": c.method,
                "seed": c.seed,
                "family": c.family,
                "clean (%)": float(r.accuracy(("clean", 0))[i]),
                "corrupted (%)": float(np.mean([r.accuracy(k)[i] for k in ckeys])),
                "mCE (%)": mce,
                "relative mCE (%)": rel,
                "T": float(r.temperature[i]),
                "ECE clean (%)": float(r.ece[("clean", 0)][i]),
                "ECE clean, T (%)": float(r.ece_t[("clean", 0)][i]),
                "ECE corrupted (%)": float(np.mean([r.ece[k][i] for k in ckeys])),
                "ECE corrupted, T (%)": float(np.mean([r.ece_t[k][i] for k in ckeys])),
            }
        )
    table = pd.DataFrame(rows, columns=["model", *robustness.SUMMARY_COLUMNS]).set_index("model")
    parts = [f"{g}: {label}" for g, (label, idx) in refs.items() if idx]
    table.attrs["reference"] = "; ".join(parts) if parts else "none"
    if not bench:
        table.attrs["reference"] += " (mCE needs all 15 benchmark corruptions: not computed)"
    notes = [
        f"{g}: relative mCE over {len(cifar_c.BENCHMARK) - len(x)} of the 15 benchmark corruptions "
        f"(the reference loses no accuracy under {', '.join(x)})"
        for g, x in excluded.items()
        if x
    ]
    table.attrs["relative"] = "; ".join(notes)
    return table


def relative_mce(
    errors: robustness.Errors,
    reference: robustness.Errors,
    clean_error: float,
    reference_clean_error: float,
) -> tuple[float, list[str]]:
    """`robustness.relative_mce` over the benchmark corruptions whose relative CE is defined:
    those where the reference's summed error exceeds its clean error. On our JPEG q75 copy a mild
    blur can cost a model nothing (or even help), which leaves Hendrycks' ratio undefined there.
    Returns (relative mCE %, NaN if no corruption is left; the corruptions left out)."""
    ces, skipped = [], []
    for name in cifar_c.BENCHMARK:
        own = {k: v for k, v in errors.items() if k[0] == name}
        try:
            ce = robustness.relative_corruption_error(
                own, reference, clean_error, reference_clean_error
            )
            ces.append(ce[name])
        except ConfigError:
            skipped.append(name)
    return (float(np.mean(ces)) if ces else math.nan), skipped


def temperature_table(r: Result) -> pd.DataFrame:
    """Per model: T, accuracy (%) on the validation images (training images, which every model
    here was trained on) and on the clean test images, and the clean and corrupted-set ECE (%)
    before and after scaling by T."""
    ckeys = r.corrupted_keys()
    return pd.DataFrame(
        {
            "T": r.temperature,
            "validation accuracy (%)": r.val_accuracy,
            "test accuracy (%)": r.accuracy(("clean", 0)),
            "ECE clean (%)": r.ece[("clean", 0)],
            "ECE clean, T (%)": r.ece_t[("clean", 0)],
            f"ECE {r.settings.reliability[0]} s{r.settings.reliability[1]} (%)": r.ece[
                r.settings.reliability
            ],
            f"ECE {r.settings.reliability[0]} s{r.settings.reliability[1]}, T (%)": r.ece_t[
                r.settings.reliability
            ],
            "ECE corrupted, mean (%)": np.mean([r.ece[k] for k in ckeys], axis=0),
            "ECE corrupted, mean, T (%)": np.mean([r.ece_t[k] for k in ckeys], axis=0),
        },
        index=pd.Index(r.names, name="model"),
    )


def _family_members(r: Result, group: str) -> tuple[list[int], list[int]]:
    idx = [i for i, c in enumerate(r.models) if c.group == group]
    return (
        [i for i in idx if r.models[i].family == robustness.IG],
        [i for i in idx if r.models[i].family == robustness.NO_IG],
    )


def _with_holm(table: pd.DataFrame, p_column: str) -> pd.DataFrame:
    per = [k for k in table.index if k not in (robustness.CLEAN, robustness.ALL, robustness.DROP)]
    table["p_holm"], table["reject"] = np.nan, False
    if per:
        adjusted, reject = robustness.holm(table.loc[per, p_column].to_numpy())
        table.loc[per, "p_holm"], table.loc[per, "reject"] = adjusted, reject
    return table


def family_bootstrap(r: Result, group: str = PUBLISHED) -> pd.DataFrame | None:
    """IG overlay minus no overlay among `group`'s models, by a paired bootstrap over test images
    (`robustness.bootstrap_differences`, `r.settings.n_boot` resamples): rows "clean", each
    corruption (its severities pooled), "all corruptions" and "all corruptions - clean" (the
    difference in the accuracy lost to corruption); a family's accuracy is the mean of its models'.
    Holm across the corruption rows (p_holm, reject at 0.05). None unless the group has models of
    both families."""
    ig, free = _family_members(r, group)
    if not ig or not free:
        return None
    s = r.settings

    def stack(idx: list[int], keys: list[Key]) -> np.ndarray:  # (models, sets, N) as 0/1
        return np.stack([r.correct[k][idx] for k in keys], axis=1).astype(np.float64)

    clean_key = [("clean", 0)]
    rows = {robustness.CLEAN: (stack(ig, clean_key), stack(free, clean_key))}
    for n in s.corruptions:
        keys = [(n, sev) for sev in s.severities]
        rows[n] = (stack(ig, keys), stack(free, keys))
    all_keys = r.corrupted_keys()
    a_all, b_all = stack(ig, all_keys), stack(free, all_keys)
    rows[robustness.ALL] = (a_all, b_all)
    rows[robustness.DROP] = (
        a_all.mean(axis=1) - stack(ig, clean_key)[:, 0],
        b_all.mean(axis=1) - stack(free, clean_key)[:, 0],
    )
    table = robustness.bootstrap_differences(rows, s.n_boot, s.seed)
    table = table.rename(
        columns={"a (%)": f"{robustness.IG} (%)", "b (%)": f"{robustness.NO_IG} (%)"}
    )
    table.attrs.update(a=[r.names[i] for i in ig], b=[r.names[i] for i in free], group=group)
    return _with_holm(table, "p")


def seed_comparison(r: Result, group: str = RUN_CACHE) -> pd.DataFrame | None:
    """IG overlay minus no overlay among `group`'s models across seeds: per seed, each family's
    mean accuracy over its methods; a paired t-test across the seeds both families have
    (`stats.compare(paired=True)`), per row as `family_bootstrap`'s, with Holm across the
    corruptions. None with fewer than two shared seeds."""
    ig, free = _family_members(r, group)
    seeds_ig = {r.models[i].seed for i in ig} - {None}
    seeds_free = {r.models[i].seed for i in free} - {None}
    common = sorted(seeds_ig & seeds_free)
    if len(common) < 2:
        return None
    s = r.settings

    def acc(keys: list[Key], idx: list[int]) -> np.ndarray:  # (models,) mean accuracy over keys
        return np.mean([r.accuracy(k)[idx] for k in keys], axis=0)

    def per_seed(keys: list[Key], idx: list[int], minus: list[Key] | None = None) -> list[float]:
        out = []
        for seed in common:
            chosen = [i for i in idx if r.models[i].seed == seed]
            v = acc(keys, chosen)
            if minus is not None:
                v = v - acc(minus, chosen)
            out.append(float(v.mean()))
        return out

    wanted = {robustness.CLEAN: [("clean", 0)]}
    wanted.update({n: [(n, sev) for sev in s.severities] for n in s.corruptions})
    wanted[robustness.ALL] = r.corrupted_keys()
    rows = {}
    with warnings.catch_warnings():  # identical values: scipy warns, the table shows NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, keys in wanted.items():
            rows[name] = stats.compare(per_seed(keys, ig), per_seed(keys, free), paired=True)
        rows[robustness.DROP] = stats.compare(
            per_seed(r.corrupted_keys(), ig, [("clean", 0)]),
            per_seed(r.corrupted_keys(), free, [("clean", 0)]),
            paired=True,
        )
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("what")
    table.attrs.update(seeds=common, group=group)
    return _with_holm(table, "p")


def records(
    r: Result,
    summary: pd.DataFrame,
    bootstrap: Mapping[str, pd.DataFrame | None],
    seeds: Mapping[str, pd.DataFrame | None],
) -> list[dict]:
    """`report.save_results("robustness", ...)` records: one per model ({"kind": "model", ...the
    summary row}) and one per family comparison ({"kind": "difference", "group", "test", "diff",
    "ci_low", "ci_high", "p", "clean_diff"}), each with the data, images and sets evaluated."""
    common = {
        "data": r.data,
        "images": r.images,
        "corruptions": len(r.settings.corruptions),
        "severities": list(r.settings.severities),
    }

    def plain(v: object) -> object:
        if isinstance(v, np.generic):
            v = v.item()
        return None if isinstance(v, float) and math.isnan(v) else v

    out = []
    for name, row in summary.iterrows():
        out.append(
            {"kind": "model", "model": name, **{k: plain(v) for k, v in row.items()}, **common}
        )
    for group, t in bootstrap.items():
        if t is not None:
            a, c = t.loc[robustness.ALL], t.loc[robustness.CLEAN]
            out.append(
                {
                    "kind": "difference",
                    "group": group,
                    "test": "paired bootstrap over test images",
                    "ig_models": len(t.attrs.get("a", [])),
                    "other_models": len(t.attrs.get("b", [])),
                    "diff": float(a["difference (pp)"]),
                    "ci_low": float(a["ci_low"]),
                    "ci_high": float(a["ci_high"]),
                    "p": float(a["p"]),
                    "clean_diff": float(c["difference (pp)"]),
                    **common,
                }
            )
    for group, t in seeds.items():
        if t is not None:
            a, c = t.loc[robustness.ALL], t.loc[robustness.CLEAN]
            out.append(
                {
                    "kind": "difference",
                    "group": group,
                    "test": f"paired t across {len(t.attrs.get('seeds', []))} seeds",
                    "seeds": len(t.attrs.get("seeds", [])),
                    "diff": float(a["diff"]),
                    "ci_low": plain(float(a["ci_low"])),
                    "ci_high": plain(float(a["ci_high"])),
                    "p": plain(float(a["p"])),
                    "clean_diff": float(c["diff"]),
                    **common,
                }
            )
    return out
