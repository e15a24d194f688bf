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


def training_curves(history, title: str = "") -> plt.Figure:
    """Loss and accuracy per epoch from a run's history (a DataFrame of history.csv)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(history["epoch"], history["train_loss"], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    for col, label in (
        ("train_accuracy", "train"),
        ("val_accuracy", "validation"),
        ("test_accuracy", "test"),
    ):
        if col in history:
            ax_acc.plot(history["epoch"], history[col], marker="o", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion(matrix, classes, ax: Axes | None = None) -> Axes:
    """Row-normalised confusion matrix (%), true class down, predicted class across."""
    import numpy as np

    ax = ax or plt.subplots(figsize=(5.5, 4.8))[1]
    rates = 100 * matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        ax.text(i, i, f"{rates[i, i]:.0f}", ha="center", va="center", fontsize=7, color="w")
    ax.figure.colorbar(im, ax=ax, label="% of true class")
    return ax
