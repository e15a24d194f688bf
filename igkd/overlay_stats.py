"""The IG overlay against none: which family a method belongs to, and the paired statistics over
test images that compare the families (chapter 10): the paired bootstrap of accuracy differences
and Holm's correction across corruptions. Pure functions of per-image correctness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from igkd.calibration import as_numpy
from igkd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

IG, NO_IG, TEACHER = "IG overlay", "no overlay", "teacher"  # the families of chapter 10
CONFIDENCE = 0.95
ALPHA = 0.05
# The rows of a family table (`bootstrap_differences`) besides the corruptions:
CLEAN, ALL, DROP = "clean", "all corruptions", "all corruptions - clean"


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
    a = as_numpy(x)
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
    """`stats.holm`'s adjusted p-values and the rejections at `alpha` (adjusted p <= alpha, which
    is Holm's step-down rule); NaNs stay NaN, are not counted among the tests and are not rejected."""
    from igkd import stats

    adjusted = stats.holm(p_values, alpha)
    return adjusted, np.nan_to_num(adjusted, nan=np.inf) <= alpha
