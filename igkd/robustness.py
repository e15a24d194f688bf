"""Robustness and calibration of the chapter 10 models: corruption error, mCE and relative mCE
(Hendrycks & Dietterich, ICLR 2019, with any model as the reference), here; calibration (ECE,
reliability bins, temperature scaling) in `igkd.calibration`; the paired bootstrap over test images
and Holm's correction that compare the IG-overlay students with the others in
`igkd.overlay_stats`; chapter 10's closing paragraph (`conclusion`) in `igkd.robustness_conclusion`.
Their names stay importable from here. Pure functions of errors, scores, correctness and labels;
the corrupted images themselves come from `igkd.corruptions`, the models and tables of chapter 10
from `igkd.robustness_eval`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from igkd.calibration import ece, fit_temperature, nll, reliability  # noqa: F401
from igkd.corruptions import BENCHMARK, CORRUPTIONS, spec
from igkd.errors import ConfigError
from igkd.overlay_stats import (  # noqa: F401 (re-exported: robustness.bootstrap_differences, ...)
    ALL,
    ALPHA,
    CLEAN,
    CONFIDENCE,
    DROP,
    IG,
    NO_IG,
    TEACHER,
    bootstrap_differences,
    family,
    holm,
    is_ig,
    paired_bootstrap,
)
from igkd.robustness_conclusion import (  # noqa: F401 (re-exported: robustness.conclusion, ...)
    CHANCE,
    CHANCE_MARGIN,
    SUMMARY_COLUMNS,
    applied,
    conclusion,
)

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
