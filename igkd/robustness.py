"""Robustness and calibration metrics: corruption error, mCE and relative mCE (Hendrycks &
Dietterich, ICLR 2019, with any model as the reference), expected calibration error and reliability
bins (Guo et al. 2017), and temperature scaling; the paired bootstrap over test images and Holm's
correction that compare the IG-overlay students with the others, and chapter 10's closing paragraph
(`conclusion`). Pure functions of errors, scores, correctness and labels; the corrupted images
themselves come from `igkd.corruptions`, the models and tables of chapter 10 from
`igkd.robustness_eval`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from igkd.corruptions import BENCHMARK, CORRUPTIONS, spec
from igkd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

Errors = Mapping[tuple[str, int], float]  # (corruption, severity) -> top-1 error in %


# --- robustness metrics ----------------------------------------------------------------------------


def _summed(errors: Errors, name: str, severities: Sequence[int], what: str) -> float:
    missing = [s for s in severities if (name, s) not in errors]
    if missing:
        raise ConfigError(f"{what} has no error for {name} at severities {missing}")
    return float(sum(errors[(name, s)] for s in severities))


def _names(errors: Errors) -> list[str]:
    return sorted({n for n, _ in errors}, key=lambda n: list(CORRUPTIONS).index(n))


def corruption_error(errors_model: Errors, errors_reference: Errors) -> dict[str, float]:
    """CE per corruption in %: 100 * sum over severities of the model's error / the reference's.

    Both map (name, severity) -> top-1 error (%); each corruption in `errors_model` is summed over
    its severities, which the reference must also have. 100 = as robust as the reference.
    """
    for name, _ in errors_model:
        spec(name)
    ce = {}
    for name in _names(errors_model):
        sevs = sorted(s for n, s in errors_model if n == name)
        ref = _summed(errors_reference, name, sevs, "the reference")
        if ref <= 0:
            raise ConfigError(f"the reference's summed error on {name} is {ref}, not positive")
        ce[name] = 100.0 * _summed(errors_model, name, sevs, "the model") / ref
    return ce


def relative_corruption_error(
    errors_model: Errors,
    errors_reference: Errors,
    clean_error_model: float,
    clean_error_reference: float,
) -> dict[str, float]:
    """Relative CE per corruption in %: 100 * sum_s (E_s - E_clean) of the model / the reference's."""
    model = {k: v - clean_error_model for k, v in errors_model.items()}
    reference = {k: v - clean_error_reference for k, v in errors_reference.items()}
    return corruption_error(model, reference)


def _benchmark_mean(ce: dict[str, float]) -> float:
    missing = [n for n in BENCHMARK if n not in ce]
    if missing:
        raise ConfigError(f"mCE needs all 15 benchmark corruptions; missing {missing}")
    return float(np.mean([ce[n] for n in BENCHMARK]))


def mce(errors_model: Errors, errors_reference: Errors) -> float:
    """Mean corruption error (%) over the 15 benchmark corruptions (the extras are ignored)."""
    bench = {k: v for k, v in errors_model.items() if k[0] in BENCHMARK}
    return _benchmark_mean(corruption_error(bench, errors_reference))


def relative_mce(
    errors_model: Errors,
    errors_reference: Errors,
    clean_error_model: float,
    clean_error_reference: float,
) -> float:
    """Relative mCE (%): the mean over the 15 benchmark corruptions of the relative CE."""
    bench = {k: v for k, v in errors_model.items() if k[0] in BENCHMARK}
    return _benchmark_mean(
        relative_corruption_error(bench, errors_reference, clean_error_model, clean_error_reference)
    )


# --- calibration -----------------------------------------------------------------------------------


def _as_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _probabilities(scores: Any, from_logits: bool | None) -> np.ndarray:
    """(N, K) probabilities from probabilities or logits (None: logits unless rows sum to 1)."""
    from scipy.special import softmax

    s = _as_numpy(scores)
    if s.ndim != 2:
        raise ConfigError(f"scores must be (N, classes), not {s.shape}")
    if from_logits is None:
        from_logits = not (
            (s >= 0).all() and (s <= 1).all() and np.allclose(s.sum(1), 1.0, atol=1e-4)
        )
    return softmax(s, axis=1) if from_logits else s


def _bins(
    scores: Any, labels: Any, n_bins: int, from_logits: bool | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin index, confidence, correct) per sample; bins (k/n, (k+1)/n] of the top probability."""
    p = _probabilities(scores, from_logits)
    y = _as_numpy(labels, np.int64).reshape(-1)
    if len(y) != len(p) or len(y) == 0:
        raise ConfigError(f"{len(p)} predictions but {len(y)} labels")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r}; use a positive integer")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    return b, conf, correct


def reliability(
    scores: Any, labels: Any, n_bins: int = 15, from_logits: bool | None = None
) -> pd.DataFrame:
    """Reliability-diagram bins: one row per bin (lower, upper], with the mean top-1 confidence,
    the accuracy (both in [0, 1], NaN for an empty bin) and the count.

    `scores` are (N, K) probabilities or logits (`from_logits`; None guesses), `labels` (N,).
    """
    import pandas as pd

    b, conf, correct = _bins(scores, labels, n_bins, from_logits)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, n_bins) / count
        acc = np.bincount(b, correct, n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "confidence": np.where(count > 0, mean_conf, np.nan),
            "accuracy": np.where(count > 0, acc, np.nan),
            "count": count,
        }
    )


def ece(scores: Any, labels: Any, n_bins: int = 15, from_logits: bool | None = None) -> float:
    """Expected calibration error in %: sum over equal-width confidence bins of
    (bin count / N) * |accuracy - mean confidence| (Guo et al. 2017).

    `scores` are (N, K) probabilities or logits (`from_logits`; None guesses), `labels` (N,).
    """
    table = reliability(scores, labels, n_bins, from_logits)
    full = table[table["count"] > 0]
    gap = (full["accuracy"] - full["confidence"]).abs()
    return float(100.0 * (gap * full["count"]).sum() / full["count"].sum())


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of softmax(logits / temperature) at the labels."""
    from scipy.special import logsumexp

    z = _as_numpy(logits) / temperature
    y = _as_numpy(labels, np.int64).reshape(-1)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (temperature scaling,
    Guo et al. 2017), searched on log T within `bounds`.

    Fit it on held-out validation logits (N, K) and labels (N,), never on the test set; then
    divide the test logits by T. T > 1 softens an over-confident model.
    """
    from scipy.optimize import minimize_scalar

    z = _as_numpy(logits)
    y = _as_numpy(labels, np.int64).reshape(-1)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ConfigError(f"logits {z.shape} and labels {y.shape} do not match")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda t: nll(z, y, float(np.exp(t))), bounds=(lo, hi), method="bounded")
    return float(np.exp(res.x))


# --- the IG overlay against none: paired statistics over test images -------------------------------

IG, NO_IG, TEACHER = "IG overlay", "no overlay", "teacher"  # the families of chapter 10
CONFIDENCE = 0.95
ALPHA = 0.05


def is_ig(method: str) -> bool:
    """True for a method trained with the IG overlay: its name contains "IG" (IG, KD_IG, IG_AT,
    KD_IG_AT), as the paper names them."""
    return "IG" in str(method)


def family(method: str) -> str:
    """`IG` ("IG overlay"), `NO_IG` ("no overlay") or, for "teacher", `TEACHER`."""
    if method == "teacher":
        return TEACHER
    return IG if is_ig(method) else NO_IG


def _per_image(x: Any, name: str) -> np.ndarray:
    """(..., N) correctness (0/1, bool or fractions) -> (N,) mean over every leading axis."""
    a = _as_numpy(x)
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ConfigError(f"{name} must hold one value per test image, not shape {a.shape}")
    return a.reshape(-1, a.shape[-1]).mean(axis=0)


def bootstrap_differences(
    rows: Mapping[str, tuple[Any, Any]],
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    chunk: int = 250,
) -> pd.DataFrame:
    """Paired bootstrap over test images of accuracy(a) - accuracy(b), in percentage points.

    `rows` maps a row name (a corruption, "clean", ...) to (a, b): correctness of the two sides on
    the same N test images, each (N,) or (..., N) with 0/1 (or bool, or per-image fractions) and any
    leading axes (models of a family, severities) averaged per image first; so a side's accuracy is
    the mean of its models' accuracies. Every row has the same N images and is resampled with the
    same `n_boot` draws of N images with replacement (seeded by `seed`), the same draw for both
    sides: the pairing is by image.

    Returns one row per name: a (%), b (%), difference (pp), ci_low / ci_high (the percentile
    interval at `confidence`), p (two-sided: the share of bootstrap differences at least as far from
    the observed one as the observed one is from 0, (1 + k) / (1 + n_boot)), images and n_boot. A
    row whose two sides agree on every image has difference, CI 0 and p 1.
    """
    import pandas as pd

    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ConfigError(f"n_boot={n_boot!r}; use an integer of at least 100")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence!r}; use a level in (0, 1)")
    if not rows:
        raise ConfigError("rows is empty; give {name: (correct_a, correct_b)}")
    names = list(rows)
    a = np.stack([_per_image(rows[k][0], f"{k}: a") for k in names])  # (R, N)
    b = np.stack([_per_image(rows[k][1], f"{k}: b") for k in names])
    if a.shape != b.shape:
        raise ConfigError(f"the two sides cover {a.shape[1]} and {b.shape[1]} images")
    delta = 100.0 * (a - b)  # (R, N) per-image difference in pp
    n = delta.shape[1]
    observed = delta.mean(axis=1)
    rng = np.random.default_rng(seed)
    boots = np.empty((n_boot, len(names)))
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n)) + n * np.arange(m)[:, None]
        counts = np.bincount(idx.ravel(), minlength=m * n).reshape(m, n)
        boots[start : start + m] = counts @ delta.T / n
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail], axis=0)
    far = (np.abs(boots - observed) >= np.abs(observed) - 1e-12).sum(axis=0)
    p = np.where(np.abs(delta).sum(axis=1) == 0, 1.0, (1 + far) / (1 + n_boot))
    return pd.DataFrame(
        {
            "a (%)": 100.0 * a.mean(axis=1),
            "b (%)": 100.0 * b.mean(axis=1),
            "difference (pp)": observed,
            "ci_low": lo,
            "ci_high": hi,
            "p": np.minimum(p, 1.0),
            "images": n,
            "n_boot": n_boot,
        },
        index=pd.Index(names, name="what"),
    )


def paired_bootstrap(
    a: Any, b: Any, n_boot: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> dict[str, float]:
    """`bootstrap_differences` for one pair: a dict with a (%), b (%), difference (pp), ci_low,
    ci_high, p, images, n_boot."""
    row = bootstrap_differences({"a - b": (a, b)}, n_boot, seed, confidence).iloc[0]
    return {k: float(v) for k, v in row.items()}


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm-adjusted p-values and rejections at `alpha` (statsmodels' multipletests); NaNs stay
    NaN and are not counted among the tests."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    adjusted, reject = np.full(p.shape, np.nan), np.zeros(p.shape, dtype=bool)
    ok = ~np.isnan(p)
    if ok.any():
        reject[ok], adjusted[ok], _, _ = multipletests(p[ok], alpha=alpha, method="holm")
    return adjusted, reject


# --- the closing paragraph of chapter 10 -----------------------------------------------------------

CLEAN, ALL, DROP = "clean", "all corruptions", "all corruptions - clean"  # rows besides corruptions
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
