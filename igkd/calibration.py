"""Calibration of a classifier's scores: expected calibration error and reliability bins (Guo et al.
2017), negative log-likelihood, and temperature scaling. Pure functions of (N, K) scores or logits
and (N,) labels, given as NumPy arrays or torch tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from igkd.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def as_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """`x` (a torch tensor, on any device, or anything NumPy reads) as a NumPy array of `dtype`."""
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _probabilities(scores: Any, from_logits: bool | None) -> np.ndarray:
    """(N, K) probabilities from probabilities or logits (None: logits unless rows sum to 1)."""
    from scipy.special import softmax

    s = as_numpy(scores)
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
    y = as_numpy(labels, np.int64).reshape(-1)
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

    z = as_numpy(logits) / temperature
    y = as_numpy(labels, np.int64).reshape(-1)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) (temperature scaling,
    Guo et al. 2017), searched on log T within `bounds`.

    Fit it on held-out validation logits (N, K) and labels (N,), never on the test set; then
    divide the test logits by T. T > 1 softens an over-confident model.
    """
    from scipy.optimize import minimize_scalar

    z = as_numpy(logits)
    y = as_numpy(labels, np.int64).reshape(-1)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ConfigError(f"logits {z.shape} and labels {y.shape} do not match")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda t: nll(z, y, float(np.exp(t))), bounds=(lo, hi), method="bounded")
    return float(np.exp(res.x))
