"""The fix ablation: each fix of the published code (book/differences.md), measured, not argued.

Every fix is one StudentConfig field whose igkd default is compared, seed by seed, with the
published code's behaviour (or, for the IG baseline and step count, the alternative the paper
leaves open), on the method the fix touches. Both arms of a comparison share everything else
(seed, epochs, data share), so the seed-paired t-test measures the fix alone; Holm adjusts the
p-values across the fixes. The default arms are the ablation's own runs, reused from the cache.

    configs = fixes.configs("quick", seeds=range(3), epochs=1, share=0.2)
    table = fixes.table(fixes.accuracies(results))   # one row per fix
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from igkd import experiments, profiles, stats
from igkd.config import StudentConfig
from igkd.errors import ConfigError


@dataclass(frozen=True)
class Fix:
    """One fix: `field` of StudentConfig at igkd's default `ours` against `other`, on `method`."""

    name: str
    entry: int  # its number in book/differences.md
    method: str
    field: str
    ours: object
    other: object  # None: the profile's setting (`fix_ig_steps` for the step count)
    other_label: str


FIXES: tuple[Fix, ...] = (
    Fix("teacher outputs", 2, "KD_IG", "teacher_outputs", "online", "cached",
        "precomputed on clean images"),
    Fix("overlay order", 3, "KD_IG", "overlay_order", "aligned", "published",
        "map not cropped or flipped with its image"),
    Fix("AT loss form", 4, "KD_IG_AT", "at_form", "paper", "zagoruyko",
        "Zagoruyko & Komodakis' form (beta 1000)"),
    Fix("IG baseline", 5, "KD_IG", "ig_baseline", "normalized-zero", "black",
        "a black image"),
    Fix("IG step count", 5, "KD_IG", "ig_n_steps", None, None,
        "another number of quadrature points"),
)  # fmt: skip


def names() -> list[str]:
    return [f.name for f in FIXES]


def chosen(which: Sequence[str] | None) -> list[Fix]:
    """The fixes named in `which` (None: all), in FIXES order; ConfigError naming an unknown one."""
    if which is None:
        return list(FIXES)
    unknown = sorted(set(which) - set(names()))
    if unknown:
        raise ConfigError(f"unknown fix(es) {unknown}; use some of {', '.join(names())}")
    return [f for f in FIXES if f.name in which]


def _other(fix: Fix, profile: str) -> object:
    if fix.field == "ig_n_steps":  # the alternative step count: the profile's, not the paper's
        return experiments.setting("fix_ig_steps", profile, None, 16)
    return fix.other


def arms(fix: Fix, base: StudentConfig) -> tuple[StudentConfig, StudentConfig]:
    """(igkd's default, the other behaviour) of `fix` for the seed and data of `base`."""
    ours = base.replace(method=fix.method, **{fix.field: fix.ours})
    return ours, ours.replace(**{fix.field: _other(fix, base.profile)})


def configs(
    profile: str | None,
    seeds: Iterable[int],
    epochs: int | None = None,
    share: float = 1.0,
    which: Sequence[str] | None = None,
    **common: object,
) -> list[StudentConfig]:
    """Every run the fix ablation needs, seed-major and without repeats (the default arms of
    several fixes are the same run): 4.1x students with `epochs` on `share` of the training set
    (`experiments.subset`), `common` StudentConfig fields added (e.g. teacher_checkpoint)."""
    prof = profiles.get(profile).name
    out: list[StudentConfig] = []
    for seed in seeds:
        base = StudentConfig(
            4.1, "KD_IG", profile=prof, seed=seed, epochs=epochs,
            **experiments.subset(share), **common,
        )  # fmt: skip
        for fix in chosen(which):
            out += [c for c in arms(fix, base) if c not in out]
    return out


def accuracies(
    results: Sequence[Mapping],
    configs_: Sequence[StudentConfig],
    which: Sequence[str] | None = None,
) -> dict[str, tuple[list[float], list[float]]]:
    """{fix: (accuracies of igkd's default, of the other behaviour)}, paired by seed, from the
    final test accuracies of `results` (sweep.run_many's, in the order of `configs_`). Seeds
    whose runs failed on either side are left out of that fix; with `which` None, fixes whose
    runs `configs_` does not hold are left out altogether."""
    by_config = {c: r for c, r in zip(configs_, results, strict=True)}
    seeds = sorted({c.seed for c in configs_})
    out: dict[str, tuple[list[float], list[float]]] = {}
    for fix in chosen(which):
        ours, other = [], []
        for seed in seeds:
            base = next(c for c in configs_ if c.seed == seed)
            pair = [by_config.get(c) for c in arms(fix, base)]
            if which is None and any(c not in by_config for c in arms(fix, base)):
                continue  # a fix this experiment did not run
            acc = [(r or {}).get("final_test_accuracy") for r in pair]  # run_many's entries
            if None not in acc:
                ours.append(acc[0])
                other.append(acc[1])
        if ours or which is not None:
            out[fix.name] = (ours, other)
    return out


def table(
    acc: Mapping[str, tuple[Sequence[float], Sequence[float]]], profile: str | None
) -> pd.DataFrame:
    """One row per fix: igkd's default and the other behaviour (mean test accuracy, %), their
    difference (default - other, pp) with its 95 % CI, the seed-paired t-test and Holm's p across
    the fixes. Fewer than 2 seeds, or differences that do not scatter: no test (NaN)."""
    prof = profiles.get(profile).name
    rows = []
    for fix in chosen(list(acc)):
        ours, other = acc[fix.name]
        row = {
            "name": fix.name,
            "fix": f"{fix.name} (differences.md {fix.entry})",
            "method": fix.method,
            "igkd default": f"{fix.field}={_show(fix.ours, fix, prof)}",
            "other": f"{fix.field}={_show(_other(fix, prof), fix, prof)}: {fix.other_label}",
            "seeds": len(ours),
            "default (%)": _mean(ours),
            "other (%)": _mean(other),
        }
        row.update(_paired(ours, other))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["Holm p"] = stats.holm(out["p"].to_numpy()) if len(out) else []
    return out


def labels(profile: str | None) -> dict[str, tuple[str, str]]:
    """{fix: (igkd's default, the other behaviour)} as `field=value`, for the paragraph."""
    prof = profiles.get(profile).name
    return {
        f.name: (
            f"{f.field}={_show(f.ours, f, prof)}",
            f"{f.field}={_show(_other(f, prof), f, prof)}",
        )
        for f in FIXES
    }


def holm_by_fix(frame: pd.DataFrame) -> dict[str, float]:
    """{fix: Holm-adjusted p} of a `table`."""
    return dict(zip(frame["name"], frame["Holm p"], strict=True))


def _show(value: object, fix: Fix, profile: str) -> object:
    if fix.field == "ig_n_steps" and value is None:
        return f"{profiles.get(profile).ig_n_steps} (the profile's)"
    return value


def _mean(x: Sequence[float]) -> float:
    return float(sum(x) / len(x)) if x else math.nan


def _paired(ours: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    nan = {"difference (pp)": math.nan, "CI low": math.nan, "CI high": math.nan, "t": math.nan}
    nan["p"] = math.nan
    if len(ours) < 2:
        return {**nan, "difference (pp)": _mean(ours) - _mean(other) if ours else math.nan}
    diffs = [a - b for a, b in zip(ours, other, strict=True)]
    if max(diffs) == min(diffs):  # no scatter: the t-test is undefined
        return {**nan, "difference (pp)": diffs[0]}
    c = stats.compare(ours, other, paired=True)
    return {
        "difference (pp)": c["diff"],
        "CI low": c["ci_low"],
        "CI high": c["ci_high"],
        "t": c["t"],
        "p": c["p"],
    }


def records(frame: pd.DataFrame) -> list[dict]:
    """The fix table as records for the summary page (`result_files.save_results("fixes", ...)`):
    per fix its name, the two settings, seeds, the difference (pp) with its CI, p and Holm p
    (None where there was no test)."""
    keep = ["fix", "method", "igkd default", "other", "seeds", "default (%)", "other (%)"]
    keep += ["difference (pp)", "CI low", "CI high", "p", "Holm p"]
    out = []
    for row in frame[keep].to_dict("records"):
        out.append(
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        )
    return out
