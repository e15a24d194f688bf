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


# The paper's summary of those runs (paper.md 7.2, recomputed by running the authors' script): sample
# sd (ddof=1), and a paired t-test (scipy.stats.ttest_rel) of each method against the student, pairing
# run i with run i. Values as printed (t to 3 decimals, p to 3-4 significant digits).
ABLATION_SD: dict[str, float] = {
    "student": 0.305, "KD": 0.435, "IG": 0.323, "AT": 0.321,
    "KD_IG": 0.340, "KD_AT": 0.286, "IG_AT": 0.235, "KD_IG_AT": 0.279,
}  # fmt: skip
ABLATION_PAIRED_VS_STUDENT: dict[str, tuple[float, float]] = {  # (t, p)
    "KD": (2.567, 0.0303),
    "IG": (0.876, 0.404),
    "AT": (-0.136, 0.895),
    "KD_IG": (6.522, 0.000109),
    "KD_AT": (3.570, 0.0060),
    "IG_AT": (1.971, 0.0803),  # t is 1.97046 (matches p 0.0803); 1.971 looks rounded twice
    "KD_IG_AT": (6.906, 0.000070),
}
# Selected pairwise paired tests (paper.md 7.2, "[CODE output]"): (a, b) -> (mean a - mean b, t, p);
# t is None where the paper prints none.
ABLATION_PAIRED_PAIRS: dict[tuple[str, str], tuple[float, float | None, float]] = {
    ("KD_IG", "KD"): (0.40, 2.07, 0.069),
    ("KD_IG", "KD_IG_AT"): (0.16, None, 0.29),
    ("KD_IG", "IG"): (0.67, None, 0.0046),
    ("KD_IG", "IG_AT"): (0.55, None, 0.00023),
    ("KD_AT", "AT"): (0.59, None, 0.000035),
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
# Lilliefors normality test of those 60 runs (paper.md 7.3; statsmodels, pvalmethod="table"): (D, p).
MONTE_CARLO_LILLIEFORS: dict[str, tuple[float, float]] = {
    "student": (0.0862, 0.375),
    "KD": (0.0768, 0.551),
    "KD_IG": (0.0978, 0.202),
    "KD_IG_AT": (0.0593, 0.894),
}
MONTE_CARLO_RUNS = 60  # runs per method (paper.md 7.3; montecarlo.py SIMULATIONS = 60)
# Pre-v1 Monte Carlo (alpha 0.1, T 3; paper.md 7.3, NB 148f216 figure): means by overlay probability
# p. Only the means were published (no variances, no run counts); the student has no overlay.
MONTE_CARLO_PRE_V1: dict[float, dict[str, float]] = {
    0.5: {"student": 90.05, "KD": 90.61, "KD_IG": 90.17, "IG": 89.62},
    0.25: {"student": 90.05, "KD": 90.61, "KD_IG": 90.70, "IG": 90.20},
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

# The v1 sweep (paper.md 7.4; NB 8534e2a): single runs with alpha 0.1, T 3, p 0.25, random student
# initialisation (the table's "KD_IG, teacher-weight init" row, a pre-v1 variant, is left out).
SWEEP_V1: dict[str, dict[str, float]] = {
    "2.2": {"student": 91.61, "KD": 91.59, "KD_IG": 90.87},
    "4.1": {"student": 91.14, "KD": 92.08, "KD_IG": 92.05},
    "7.3": {"student": 90.94, "KD": 90.88, "KD_IG": 91.40},
    "12": {"student": 90.36, "KD": 90.52, "KD_IG": 90.73},
    "29": {"student": 87.31, "KD": 88.07, "KD_IG": 88.65},
    "55": {"student": 84.97, "KD": 84.80, "KD_IG": 84.81},
    "140": {"student": 76.46, "KD": 78.73, "KD_IG": 76.05},
    "1122": {"student": 49.35, "KD": 50.36, "KD_IG": 51.53},
}

# The settings of the paper's versions, by name, as a reader can rerun them (notebooks 05 and 06,
# `settings` parameter; `experiments.settings_overrides` maps a name to StudentConfig overrides).
# Each: KD weight alpha, temperature T, overlay probability p; gamma (AT) is 0.8 throughout.
SETTINGS: dict[str, dict[str, float]] = {
    "v2": {"alpha": 0.01, "temperature": 2.5, "overlay_prob": 0.1},  # the final paper (7.2-7.3)
    "v1": {"alpha": 0.1, "temperature": 3.0, "overlay_prob": 0.25},  # v1 sweep (7.4, NB 8534e2a)
    "pre-v1-p0.5": {"alpha": 0.1, "temperature": 3.0, "overlay_prob": 0.5},  # 7.3, NB 148f216
    "pre-v1-p0.25": {"alpha": 0.1, "temperature": 3.0, "overlay_prob": 0.25},  # 7.3, NB 148f216
}
SETTINGS_SOURCE: dict[str, str] = {
    "v2": "the final paper (arXiv 2506.14440 v2): ablation, Monte Carlo and sweep",
    "v1": "the v1 compression sweep (arXiv 2503.13008; notebook 8534e2a), single runs",
    "pre-v1-p0.5": "the pre-v1 Monte Carlo at p 0.5 (notebook 148f216 figure), means only",
    "pre-v1-p0.25": "the pre-v1 Monte Carlo at p 0.25 (notebook 148f216 figure), means only",
}

# The architecture per compression factor (paper.md 1.2, derived from the code):
# (trainable parameters, convolution layers, fp32 MB = parameters x 4 / 2**20), and the AT layer
# (index of `features`, paper.md 1.3). The paper gives no FLOPs.
ARCHITECTURE: dict[str, tuple[int, int, float]] = {
    "teacher": (2_236_682, 52, 8.53),
    "2.2": (1_019_402, 45, 3.89),
    "4.1": (543_498, 39, 2.07),
    "7.3": (306_954, 33, 1.17),
    "12": (185_738, 27, 0.71),
    "29": (77_194, 21, 0.29),
    "55": (40_970, 15, 0.16),
    "140": (16_042, 9, 0.06),
    "1122": (1_994, 3, 0.008),
}
AT_LAYER: dict[str, int] = {
    "2.2": 9, "4.1": 9, "7.3": 9, "12": 4, "29": 4, "55": 4, "140": 2, "1122": 0,
}  # fmt: skip

# The literature review (main Table 1, ESM S1/S2; paper.md 7.7): its per-paper data were not
# released, so only these summaries exist.
LITERATURE = {"results": 57, "mean_delta_acc_pp": -1.40, "pearson_r_cf": -0.11, "p": 0.41}

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
# The teacher on all 5,250 images: balanced accuracy (%), Cohen's kappa, per-class accuracy (%).
IMAGENET_TEACHER_BALANCED = 68.52
IMAGENET_TEACHER_KAPPA = 0.5528
IMAGENET_TEACHER_PER_CLASS: dict[str, float] = {
    "airplane": 84.0,
    "automobile": 53.86,
    "bird": 73.28,
    "cat": 81.2,
    "dog": 46.27,
    "frog": 66.0,
    "ship": 77.6,
    "truck": 66.0,
}
# Images per CIFAR-10 class in the subset (50 per WordNet ID) and after the teacher-correct filter.
IMAGENET_COUNTS: dict[str, int] = {
    "airplane": 150,
    "automobile": 700,
    "bird": 2900,
    "cat": 250,
    "dog": 750,
    "frog": 150,
    "ship": 250,
    "truck": 100,
}
IMAGENET_KEPT: dict[str, int] = {
    "airplane": 126,
    "automobile": 377,
    "bird": 2125,
    "cat": 203,
    "dog": 347,
    "frog": 99,
    "ship": 194,
    "truck": 66,
}
# Per-class accuracy (%) of the students on the filtered subset, classes as in IMAGENET_KEPT.
IMAGENET_PER_CLASS: dict[str, tuple[float, ...]] = {
    "KD_IG": (94.44, 75.33, 75.06, 85.71, 84.73, 89.90, 86.60, 93.94),
    "KD_IG_AT": (95.24, 77.19, 73.98, 85.22, 85.01, 87.88, 89.69, 86.36),
    "IG": (97.62, 86.47, 80.38, 83.74, 81.84, 80.81, 84.54, 86.36),
    "KD": (92.86, 74.80, 80.19, 87.68, 86.46, 81.82, 85.05, 90.91),
    "student": (96.03, 72.94, 80.75, 82.27, 78.96, 84.85, 85.05, 89.39),
}

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
