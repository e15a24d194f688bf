"""The paper's protocol on the ImageNet subset (paper.md 7.5): the teacher's predictions on all
subset images, the subset of images the teacher classifies correctly, and each student on that
subset: accuracy, balanced accuracy, Cohen's kappa and per-class accuracy. Every model sees the
input space it was trained on (`model.normalized_inputs`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from igkd.data import CIFAR10_CLASSES
from igkd.errors import ConfigError
from igkd.imagenet_subset import Subset


@dataclass(frozen=True)
class Scores:
    """Accuracy and balanced accuracy (%), Cohen's kappa and per-class accuracy (%) of predictions.

    Predictions range over all ten CIFAR-10 classes, as in the paper: an image called deer or horse
    is wrong (`absent_predictions` counts them). Balanced accuracy is sklearn's, the mean recall over
    the classes that have images (eight on the full subset).
    """

    n: int
    accuracy: float
    balanced_accuracy: float
    kappa: float
    per_class: dict[str, float]  # classes with images only
    absent_predictions: int  # predictions of a class that has no images here (deer, horse)

    def row(self) -> dict[str, float]:
        """The scores as one flat table row."""
        return {
            "images": self.n,
            "accuracy (%)": self.accuracy,
            "balanced accuracy (%)": self.balanced_accuracy,
            "kappa": self.kappa,
            **{f"{c} (%)": v for c, v in self.per_class.items()},
        }


def scores(
    true: np.ndarray | torch.Tensor,
    pred: np.ndarray | torch.Tensor,
    classes: tuple[str, ...] = CIFAR10_CLASSES,
) -> Scores:
    """Scores of predicted labels `pred` (N,) against `true` (N,), both in 0..len(classes)-1."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ConfigError(f"true {true.shape} and pred {pred.shape} must be equal-length vectors")
    present = np.unique(true)
    absent = int(np.isin(pred, present, invert=True).sum())
    if len(true) == 0:
        nan = float("nan")
        return Scores(0, nan, nan, nan, {}, 0)
    per_class = {classes[c]: float(100 * (pred[true == c] == c).mean()) for c in present}
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # "y_pred contains classes not in y_true" is the expected deer/horse case; kappa is NaN
        # (0/0) when all images and predictions are one class.
        warnings.simplefilter("ignore")
        balanced = float(100 * balanced_accuracy_score(true, pred))
        kappa = float(cohen_kappa_score(true, pred))
    return Scores(len(true), float(100 * (pred == true).mean()), balanced, kappa, per_class, absent)


def model_predictions(
    model: nn.Module, images: torch.Tensor, batch_size: int = 500, device=None
) -> np.ndarray:
    """Predicted CIFAR-10 labels (N,) for uint8 images, in the input space the model was trained on.

    The model must say which: `model.normalized_inputs` True (CIFAR-normalised, the teacher) or
    False ([0, 1] pixels, the paper's students); igkd's loaders set it.
    """
    from igkd.models import input_space
    from igkd.train import predict

    normalized = input_space(model)
    if len(images) == 0:
        return np.empty(0, dtype=np.int64)
    return predict(model, images, normalized, batch_size, device).argmax(1).numpy()


@dataclass(frozen=True)
class SubsetEvaluation:
    """The protocol's result: the teacher on all images, the filter, each student on what is kept."""

    teacher: Scores  # on every subset image
    kept: Subset  # the images the teacher classifies correctly
    students: dict[str, Scores]  # on the kept images
    predictions: dict[str, np.ndarray]  # "teacher" (all images) and each student (kept images)

    def table(self) -> list[dict]:
        """One row per model: the teacher (all images), then each student (kept images)."""
        return [
            {"model": "teacher (all images)", **self.teacher.row()},
            *({"model": name, **s.row()} for name, s in self.students.items()),
        ]


def teacher_correct(pred: np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Indices of the images whose prediction equals the label: the paper's filter (5,250 -> 3,537)."""
    return np.flatnonzero(np.asarray(pred) == np.asarray(labels))


def evaluate(
    teacher: nn.Module,
    students: Mapping[str, nn.Module],
    subset: Subset,
    batch_size: int = 500,
    device=None,
) -> SubsetEvaluation:
    """The paper's protocol on `subset` (paper.md 7.5).

    The teacher is scored on all images; the images it gets right are kept; each student is scored
    on those. Each model is fed the input space it was trained on (`model.normalized_inputs`).
    """
    t_pred = model_predictions(teacher, subset.images, batch_size, device)
    kept = subset.subset(teacher_correct(t_pred, subset.labels))
    preds = {"teacher": t_pred}
    results = {}
    for name, model in students.items():
        preds[name] = model_predictions(model, kept.images, batch_size, device)
        results[name] = scores(kept.labels.numpy(), preds[name])
    return SubsetEvaluation(scores(subset.labels.numpy(), t_pred), kept, results, preds)
