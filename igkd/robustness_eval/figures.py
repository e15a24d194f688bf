"""Chapter 10's figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from igkd import robustness
from igkd.robustness_eval.evaluation import (
    Result,
)
from igkd.robustness_eval.tables import (
    _groups,
    caption,
)

# --- figures -----------------------------------------------------------------------------------------


def _nothing(ax, title: str):
    ax.text(0.5, 0.5, "no model to show", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def plot_heatmap(table: pd.DataFrame, title: str = "", ax=None):
    """`heatmap_table` as a heat map (accuracy %, 0-100), each cell labelled."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(2 + 0.75 * table.shape[1], 0.9 + 0.32 * table.shape[0]))
    if table.empty:
        return _nothing(ax, title)
    im = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (y, x), v in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(
            x,
            y,
            f"{v:.3g}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v < 60 else "black",
        )
    ax.figure.colorbar(im, ax=ax, label="top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    return ax


def plot_lines(table: pd.DataFrame, xlabel: str, title: str = "", ax=None, invert_x: bool = False):
    """Each column of `table` against its index, markers on the measured points."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if table.empty or not len(table.columns):
        return _nothing(ax, title)
    for col in table.columns:
        ax.plot(table.index, table[col], "o-", label=str(col), ms=3)
    if len(table.index) <= 12:
        ax.set_xticks(list(table.index))
    ax.set(xlabel=xlabel, ylabel="top-1 accuracy (%)", title=title, ylim=(0, 100))
    if invert_x:
        ax.invert_xaxis()
    ax.legend(fontsize=7, ncol=2 if table.shape[1] > 6 else 1)
    ax.title.set_fontsize(9)
    return ax


def plot_reliability(r: Result, n_bins: int = 10):
    """Reliability diagrams, one line per (group, family) pooling its models' predictions: rows the
    clean and the reliability corrupted set, columns before and after temperature scaling (each
    model's logits divided by its own T)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 8), sharex=True, sharey=True)
    fig.suptitle(caption(r), fontsize=8)
    if not r.models:
        for ax in axes.ravel():
            _nothing(ax, "")
        return fig
    sets = [("clean", 0), r.settings.reliability]
    for row, key in enumerate(sets):
        z_all = r.logits[key]
        for col, scaled in enumerate((False, True)):
            ax = axes[row, col]
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            for (group, fam), idx in _groups(r).items():
                z = np.concatenate([z_all[i] / (r.temperature[i] if scaled else 1.0) for i in idx])
                y = np.tile(r.labels, len(idx))
                t = robustness.reliability(z, y, n_bins, from_logits=True)
                e = robustness.ece(z, y, n_bins, from_logits=True)
                ok = t["count"] > 0
                ax.plot(
                    t["confidence"][ok],
                    t["accuracy"][ok],
                    "o-",
                    ms=3,
                    label=f"{group}: {fam} (ECE {e:.3g} %)",
                )
            name = "clean" if key[0] == "clean" else f"{key[0]} s{key[1]}"
            ax.set_title(
                f"{name}, {'after' if scaled else 'before'} temperature scaling", fontsize=9
            )
            ax.legend(fontsize=7, loc="upper left")
            ax.set(xlim=(0, 1), ylim=(0, 1))
    for ax in axes[1]:
        ax.set_xlabel("mean confidence (top-1 probability)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    return fig


def timing(r: Result) -> str:
    """One line: models, sets, images and the inference throughput of `evaluate`."""
    n = len(r.models) * (r.settings.computed_sets * r.images + r.val_images)
    return (
        f"{len(r.models)} model(s) x {r.settings.computed_sets} test sets x {r.images:,} images "
        f"(+ {r.val_images:,} validation images each): {n:,} images in {r.seconds:.4g} s "
        f"({n / max(r.seconds, 1e-9):.4g} images/s, logits cache included)"
    )
