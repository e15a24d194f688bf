"""The figures: small functions that draw on a matplotlib Axes and return it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
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


def image_grid(
    rows: dict,
    column_titles: list[str] | None = None,
    cmap: str = "inferno",
    shared_scale: bool = False,
    size: float = 1.3,
) -> plt.Figure:
    """A grid of pictures: one row per entry of `rows` (name -> a batch), one column per picture.

    A batch is images (N, 3, H, W), uint8 or float in [0, 1], shown in colour, or maps (N, H, W)
    shown with `cmap`, each scaled to its own range, or with `shared_scale` to the largest value
    of its column among the map rows (for maps of one scale, such as unit-norm attention maps).
    """
    import numpy as np
    import torch

    batches = {name: torch.as_tensor(np.asarray(b)) for name, b in rows.items()}
    columns = max((len(b) for b in batches.values()), default=0)
    if not columns:
        raise ValueError("nothing to draw: every row is empty")
    fig, axes = plt.subplots(
        len(batches),
        columns,
        figsize=(size * columns + 1.2, size * len(batches) + 0.4),
        squeeze=False,
    )
    maps = [b.float() for b in batches.values() if b.dim() == 3]
    vmax = [
        max(float(m[c].max()) for m in maps if c < len(m)) if maps else None for c in range(columns)
    ]
    for r, (name, batch) in enumerate(batches.items()):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(batch):
                ax.axis("off")
                continue
            picture = batch[c]
            if picture.dim() == 3:
                rgb = picture.float() / 255 if picture.dtype == torch.uint8 else picture.float()
                ax.imshow(rgb.permute(1, 2, 0).clamp(0, 1).numpy())
            else:
                top = vmax[c] if shared_scale else None
                ax.imshow(
                    picture.float().numpy(),
                    cmap=cmap,
                    vmin=0 if shared_scale else None,
                    vmax=top,
                    interpolation="nearest",
                )
        axes[r, 0].set_ylabel(name, fontsize=8)
    for c, title in enumerate(column_titles or []):
        if c < columns:
            axes[0, c].set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def decision_mountain(probs, classes, true_class: int, ax=None, title: str = ""):
    """The probability "mountain": each sample's class probabilities (n, K) as a surface, samples
    sorted by the probability of their (shared) true class, largest first; on a 3D Axes."""
    import numpy as np

    if ax is None:
        ax = plt.figure(figsize=(5, 4)).add_subplot(projection="3d")
    p = np.asarray(probs, dtype=float)
    p = p[np.argsort(-p[:, true_class])]
    xs, ys = np.meshgrid(np.arange(p.shape[1]), np.arange(len(p)))
    ax.plot_surface(xs, ys, p, cmap="viridis", vmin=0, vmax=1, rstride=1, cstride=1, linewidth=0)
    ax.set_xticks(range(p.shape[1]), classes, rotation=60, fontsize=6)
    ax.set_ylabel("sample (sorted)", fontsize=7)
    ax.set_zlabel("probability", fontsize=7)
    ax.set_zlim(0, 1)
    ax.set_title(title, fontsize=9)
    return ax


def decision_polar(probs, classes, true_class: int, ax=None, title: str = ""):
    """Polar plot of each sample's class probabilities (n, K): the classes around the circle, one
    thin closed line per sample, their mean bold; the true class's direction marked."""
    import numpy as np

    if ax is None:
        ax = plt.figure(figsize=(4, 4)).add_subplot(projection="polar")
    p = np.asarray(probs, dtype=float)
    k = p.shape[1]
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    closed = np.append(angles, angles[0])
    for row in p:
        ax.plot(closed, np.append(row, row[0]), color="tab:blue", alpha=0.25, lw=0.8)
    mean = p.mean(0) if len(p) else np.zeros(k)
    ax.plot(closed, np.append(mean, mean[0]), color="k", lw=2, label="mean")
    ax.axvline(angles[true_class], color="tab:red", ls="--", lw=1)
    ax.set_xticks(angles, classes, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    return ax


def fix_differences(table, ax: Axes | None = None) -> Axes:
    """The fix ablation (`fixes.table`): per fix, igkd's default minus the published behaviour
    (pp) with its 95 % CI as a horizontal bar; fixes without a test show the bare difference."""
    ax = ax or plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(table)))[1]
    y = range(len(table))
    diff = table["difference (pp)"].to_numpy(dtype=float)
    # No CI (no test): a bare point.
    low = np.nan_to_num(diff - table["CI low"].to_numpy(dtype=float)).clip(min=0)
    high = np.nan_to_num(table["CI high"].to_numpy(dtype=float) - diff).clip(min=0)
    ax.errorbar(diff, y, xerr=[low, high], fmt="o", capsize=3)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(list(y), list(table["name"]))
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy, igkd default - published behaviour (pp)")
    return ax


def overlay_examples(images, maps, seed: int = 0, title: str = "") -> plt.Figure:
    """Rows: uint8 `images` (N, 3, H, W), their IG `maps` (N, H, W) and the IG overlay at p = 1
    (`augment.overlay`, seeded by `seed`); one column per image."""
    import torch

    from igkd.augment import overlay
    from igkd.data import to_float

    shown = to_float(images)
    views, _ = overlay(shown, maps, p=1.0, generator=torch.Generator().manual_seed(seed))
    fig, axes = plt.subplots(3, len(shown), figsize=(1.5 * len(shown), 4.8), squeeze=False)
    for row, (name, batch) in enumerate([("image", shown), ("|IG|", maps), ("overlay", views)]):
        for col, picture in enumerate(batch):
            rgb = picture.dim() == 3
            axes[row, col].imshow(
                picture.permute(1, 2, 0) if rgb else picture, cmap=None if rgb else "inferno"
            )
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(name)
    fig.suptitle(title, fontsize=9)
    return fig
