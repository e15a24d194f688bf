"""The teacher's IG maps on ImageNet subset images beside CIFAR-10 test images of the same classes.

The overlay feeds the student the teacher's IG map (`attribution.ig_map` of `integrated_gradients`:
sum over RGB of |IG| for the true class, from the mean-colour baseline). Chapter 07 asks whether
the teacher still looks at the object on ImageNet images of the same classes; this module picks a
few images per class, computes their maps with igkd's IG and measures how concentrated each map is
(`mass_in_top`: the share of its total in its brightest pixels), so the two domains can be set side
by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from igkd.attribution import ig_map, integrated_gradients
from igkd.errors import ConfigError
from igkd.explainers import differentiable
from igkd.imagenet import model_predictions


def pick(
    labels: torch.Tensor | np.ndarray, per_class: int = 1, classes: tuple[int, ...] | None = None
) -> np.ndarray:
    """Indices of the first `per_class` images of each class in `classes` (default: every class
    present), class by class; a class with fewer images gives what it has."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"per_class={per_class!r}; use a positive integer")
    y = np.asarray(labels, dtype=np.int64)
    wanted = sorted(set(y.tolist())) if classes is None else list(classes)
    parts = [np.flatnonzero(y == c)[:per_class] for c in wanted]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def mass_in_top(maps: torch.Tensor | np.ndarray, share: float = 0.1) -> np.ndarray:
    """Per map (N, H, W) of non-negative values, the share of its total held by its largest
    ceil(share * H * W) pixels: (N,) in [share, 1] (1: all of it there; `share`: spread evenly;
    NaN for an all-zero map)."""
    if not 0 < share < 1:
        raise ConfigError(f"share={share!r}; use a fraction between 0 and 1 (e.g. 0.1)")
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3:
        raise ConfigError(f"maps have shape {m.shape}; expected (N, H, W)")
    if (m < 0).any():
        raise ConfigError("maps must be non-negative (e.g. the |IG| maps of ig_map)")
    flat = np.sort(m.reshape(len(m), -1), axis=1)[:, ::-1]
    k = int(np.ceil(share * flat.shape[1]))
    total = flat.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, flat[:, :k].sum(1) / total, np.nan)


@dataclass(frozen=True)
class IGExamples:
    """Images (N, 3, H, W) uint8 with their labels, the teacher's predictions, IG maps (N, H, W)
    and completeness errors relative to |F(x) - F(x')|, at `n_steps` Gauss-Legendre points."""

    images: torch.Tensor
    labels: torch.Tensor
    predicted: np.ndarray
    maps: torch.Tensor
    relative_delta: np.ndarray
    n_steps: int

    def concentration(self, share: float = 0.1) -> np.ndarray:
        return mass_in_top(self.maps, share)


def ig_examples(
    teacher: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_steps: int = 50,
    **options: object,
) -> IGExamples:
    """The teacher's IG maps of the true classes of uint8 `images` (N, 3, H, W) with `labels` (N,),
    by `attribution.integrated_gradients` (`options`: its method, baseline, chunk_size, ...), and its
    predictions. The teacher must take CIFAR-normalised inputs (IG runs in that space)."""
    if not getattr(teacher, "normalized_inputs", False):
        raise ConfigError(
            "ig_examples explains the teacher (CIFAR-normalised inputs); got a model that is not"
        )
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(images) == 0:
        empty = torch.zeros(0, *images.shape[-2:])
        return IGExamples(images, labels, np.zeros(0, np.int64), empty, np.zeros(0), n_steps)
    teacher = differentiable(teacher)  # a teacher that `train.predict` has run may need a copy
    attributions, delta = integrated_gradients(teacher, images, labels, n_steps, **options)
    gap = attributions.flatten(1).sum(1) - delta
    rel = (delta.abs() / gap.abs().clamp_min(1e-12)).detach().cpu().numpy()
    return IGExamples(
        images,
        labels,
        model_predictions(teacher, images),
        ig_map(attributions).detach().cpu(),
        rel,
        n_steps,
    )
