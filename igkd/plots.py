"""The figures: small functions that draw on a matplotlib Axes and return it."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from igkd import models, paper


def paper_sweep(ax: Axes | None = None) -> Axes:
    """The paper's accuracy against compression factor (ESM Table 13), log axis, teacher dashed."""
    ax = ax or plt.subplots(figsize=(6.5, 3.6))[1]
    labels = list(paper.SWEEP)
    ratios = [models.COMPRESSION_TABLE[c].ratio for c in labels]
    for method, marker in (("student", "o"), ("KD", "s"), ("IG", "^"), ("KD_IG", "D")):
        ax.plot(ratios, [paper.SWEEP[c][method] for c in labels], marker=marker, label=method)
    ax.axhline(paper.TEACHER_ACCURACY, color="k", ls="--", lw=1, label="teacher (93.91)")
    ax.set_xscale("log")
    ax.set_xticks(ratios, [f"{c}x" for c in labels])
    ax.minorticks_off()
    ax.set_xlabel("compression factor (teacher parameters / student parameters)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.legend(fontsize=8, loc="lower left")
    return ax
