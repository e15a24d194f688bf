"""The paper's reported numbers, for side-by-side tables; each with where it comes from.

Hernandez, Chang & Nordling, "Model compression using knowledge distillation with integrated
gradients", arXiv 2506.14440 (v2 numbers), and arXiv 2503.13008 (v1). All accuracies are CIFAR-10 top-1
test accuracy in %, on the original (PNG-exact) CIFAR-10 test set.
"""

from __future__ import annotations

import statistics

TEACHER_ACCURACY = 93.91  # huyvnphan MobileNet-V2 weights; paper and notebooks

METHODS = ("student", "KD", "IG", "AT", "KD_IG", "KD_AT", "IG_AT", "KD_IG_AT")

# Ten full-training-set runs per method at 4.1x (v2 ablation; calculate_stats_results.py).
ABLATION_RUNS: dict[str, tuple[float, ...]] = {
    "student": (91.19, 90.50, 91.32, 91.28, 91.36, 91.35, 91.43, 91.05, 90.86, 91.50),
    "KD": (91.73, 91.45, 91.19, 91.37, 92.29, 91.88, 92.01, 91.41, 92.01, 90.88),
    "IG": (91.27, 92.01, 91.22, 91.42, 91.11, 91.58, 91.09, 91.57, 91.38, 90.85),
    "AT": (90.62, 91.26, 91.10, 90.80, 91.20, 91.58, 91.43, 91.42, 91.40, 90.82),
    "KD_IG": (92.58, 91.73, 92.08, 92.45, 91.96, 91.58, 91.82, 91.62, 92.13, 92.23),
    "KD_AT": (91.48, 92.05, 91.49, 91.69, 91.58, 91.92, 92.20, 91.62, 92.06, 91.39),
    "IG_AT": (91.70, 91.61, 91.05, 91.84, 91.38, 91.22, 91.30, 91.50, 91.57, 91.48),
    "KD_IG_AT": (91.83, 91.51, 91.56, 91.76, 91.73, 92.42, 91.84, 91.73, 91.97, 92.20),
}


def ablation_mean(method: str) -> float:
    """Mean of the paper's ten ablation runs for `method` (4.1x, full training set)."""
    return statistics.fmean(ABLATION_RUNS[method])


# Monte Carlo, Train80Rand, 60 runs per method at 4.1x: (mean, median, variance).
MONTE_CARLO: dict[str, tuple[float, float, float]] = {
    "student": (90.05, 90.06, 0.1176),
    "KD": (90.65, 90.64, 0.1134),
    "KD_IG": (91.29, 91.24, 0.3054),
    "KD_IG_AT": (90.89, 90.88, 0.0881),
}

# Compression sweep, ESM "Table 13" (Paper_plots notebook; protocol unclear, see paper.md 7.4).
SWEEP: dict[str, dict[str, float]] = {
    "2.2": {"student": 90.94, "KD": 91.21, "KD_IG": 91.67, "IG": 90.91},
    "4.1": {"student": 90.42, "KD": 90.71, "KD_IG": 90.66, "IG": 90.46},
    "7.3": {"student": 90.63, "KD": 90.20, "KD_IG": 91.06, "IG": 90.16},
    "12": {"student": 89.71, "KD": 89.68, "KD_IG": 90.00, "IG": 90.06},
    "29": {"student": 87.88, "KD": 87.95, "KD_IG": 87.26, "IG": 87.00},
    "55": {"student": 84.09, "KD": 84.00, "KD_IG": 84.79, "IG": 84.27},
    "140": {"student": 76.01, "KD": 76.80, "KD_IG": 76.44, "IG": 75.45},
    "1122": {"student": 55.44, "KD": 54.75, "KD_IG": 54.79, "IG": 55.22},
}

# ImageNet-32 validation subset aligned with CIFAR-10, teacher-correct filter (3,537 images):
# (accuracy %, balanced accuracy %, Cohen's kappa).
IMAGENET_SUBSET: dict[str, tuple[float, float, float]] = {
    "student": (80.89, 83.78, 0.7155),
    "KD": (81.62, 84.97, 0.7277),
    "IG": (82.33, 85.22, 0.7376),
    "KD_IG": (78.74, 85.71, 0.6941),
    "KD_IG_AT": (78.29, 85.07, 0.6884),
}
IMAGENET_TEACHER_ACCURACY = 67.37  # on all 5,250 subset images, before the filter

# Latency claimed in the abstract (ms; protocol in paper.md 7.6: one cold, unsynchronised forward).
LATENCY_MS = {"teacher": 140.0, "4.1": 13.0}

# Per-model times behind the latency claim (paper.md 7.6, "Table 8", labelled seconds per batch of 64
# but produced by one cold 1x3x32x32 forward without warm-up), by compression label, in seconds.
LATENCY_TABLE_S = {
    "teacher": 1.4e-1,
    "2.2": 1.33e-2,
    "4.1": 1.27e-2,
    "7.3": 9.32e-3,
    "12": 8.20e-3,
    "29": 6.80e-3,
    "55": 5.54e-3,
    "140": 3.92e-3,
    "1122": 1.35e-3,
}
# Speed-up over the teacher per compression factor (plot_cf_acc.py).
SPEEDUP = {
    "2.2": 10.6,
    "4.1": 11.1,
    "7.3": 15.0,
    "12": 17.1,
    "29": 20.6,
    "55": 25.27,
    "140": 35.71,
    "1122": 103.5,
}
