"""Robustness and calibration metrics: corruption error, mCE and relative mCE (Hendrycks &
Dietterich, ICLR 2019, with any model as the reference), expected calibration error and reliability
bins (Guo et al. 2017), and temperature scaling. Pure functions of errors, scores and labels; the
corrupted images themselves come from `igkd.corruptions`.
"""

from __future__ import annotations

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
