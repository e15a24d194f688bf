"""Chapter 09's figures of the hyperparameter grids (`igkd.hp_grids.run`'s tables): the KD grid
as a heat map over the paper's full alpha x T grid, the one-axis grids (p, gamma) as lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from igkd.hp_grids import AXIS_LABELS, TEST, VAL, Grid, get

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes


def plot_kd(
    frame: pd.DataFrame, metric: str = VAL, ax: Axes | None = None, grid: Grid | None = None
) -> Axes:
    """Heat map of `metric` (%) over the full alpha x T grid (points this profile did not run are
    blank), the best point circled and the paper's choice starred (in its cell's corner)."""
    import matplotlib.pyplot as plt

    grid = grid or get("kd")
    ax = ax or plt.subplots(figsize=(4.5, 4.5))[1]
    alphas, temps = grid.axes["alpha"], grid.axes["temperature"]
    z = np.full((len(alphas), len(temps)), np.nan)
    for _, r in frame.iterrows():
        if r["alpha"] in alphas and r["temperature"] in temps:
            z[alphas.index(r["alpha"]), temps.index(r["temperature"])] = r[metric]
    image = ax.imshow(np.ma.masked_invalid(z), cmap="viridis", aspect="auto", origin="lower")
    for i, j in zip(*np.nonzero(~np.isnan(z)), strict=True):  # dark text on the bright cells
        shade = "k" if image.norm(z[i, j]) > 0.6 else "w"
        ax.text(j, i, f"{z[i, j]:.4g}", ha="center", va="center", fontsize=7, color=shade)
    if np.isfinite(z).any():
        i, j = np.unravel_index(np.nanargmax(z), z.shape)
        ax.plot(j, i, "o", mfc="none", mec="r", ms=18, mew=2, label=f"best on {_name(metric)}")
    ci, cj = alphas.index(grid.chosen["alpha"]), temps.index(grid.chosen["temperature"])
    # In the cell's corner, leaving its number readable.
    ax.plot(cj - 0.32, ci + 0.3, "*", color="orange", mec="k", ms=10, label="paper's choice")
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("alpha")
    ax.set_title(f"{_name(metric)} accuracy (%)", fontsize=9)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12))
    return ax


def plot_line(frame: pd.DataFrame, grid: Grid, ax: Axes | None = None) -> Axes:
    """Validation and test accuracy (%) against a one-axis grid's value; the paper's choice dashed."""
    import matplotlib.pyplot as plt

    (axis,) = grid.axes
    ax = ax or plt.subplots(figsize=(4, 3))[1]
    data = frame.sort_values(axis)
    for metric, marker in ((VAL, "o"), (TEST, "s")):
        ax.plot(data[axis], data[metric], marker=marker, label=_name(metric))
    ax.axvline(grid.chosen[axis], color="k", ls="--", lw=1, label="paper's choice")
    full = get(grid.name).axes[axis]  # the whole grid's range, whatever this profile ran
    pad = 0.05 * (full[-1] - full[0])
    ax.set_xlim(full[0] - pad, full[-1] + pad)
    ax.set_xticks(full, [f"{v:g}" for v in full], fontsize=7, rotation=45)
    ax.set_xlabel(f"{AXIS_LABELS[axis]} ({grid.method})")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    return ax


def plot_tables(tables: Mapping[str, pd.DataFrame], title: str = "") -> list:
    """Chapter 09's figures of `run`'s tables: the KD grid's heat maps (validation, test) and
    the one-axis grids side by side; returns the matplotlib Figures."""
    import matplotlib.pyplot as plt

    figures = []
    if "kd" in tables:
        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        for ax, metric in zip(axes, (VAL, TEST), strict=True):
            plot_kd(tables["kd"], metric, ax)
        fig.suptitle(f"KD grid (blank: not run here){', ' + title if title else ''}", fontsize=9)
        fig.tight_layout()
        figures.append(fig)
    ones = [name for name in tables if len(get(name).axes) == 1]
    if ones:
        fig, axes = plt.subplots(1, len(ones), figsize=(4 * len(ones), 3), squeeze=False)
        for ax, name in zip(axes[0], ones, strict=True):
            plot_line(tables[name], get(name), ax)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        figures.append(fig)
    return figures


def _name(metric: str) -> str:
    return {VAL: "validation", TEST: "test"}.get(metric, metric)
