"""Inference: a model's logits and accuracy on an in-memory uint8 dataset (split from igkd.train,
which re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from igkd.data import Dataset, to_float
from igkd.models import input_space


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# On a CPU, inference in batches of 32 keeps a MobileNet-V2's activations in cache: 1,000 images
# took 1.4 s at 32 against 6.6 s at 500 (one thread, 2-core AVX512 machine; the teacher 1.9 vs 3.9 s).
CPU_PREDICT_BATCH = 32


def predict(
    model: nn.Module,
    images: torch.Tensor,
    normalized: bool | None = None,
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits (N, 10) float32 on the CPU for uint8 images (N, 3, 32, 32).

    `normalized` picks the input space; None uses `model.normalized_inputs` (True for the teacher,
    False for the paper's students, which were trained on [0, 1] pixels). On a CPU at most
    CPU_PREDICT_BATCH images go through at once, whatever `batch_size` asks (it does not change the
    logits beyond rounding).
    """
    if normalized is None:
        normalized = input_space(model)
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_PREDICT_BATCH)
    # Moved outside inference mode: weights converted inside it become inference tensors, and the
    # model could no longer be differentiated afterwards (IG after an evaluation failed so).
    model = model.to(device, memory_format=torch.channels_last).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size].to(device), normalized)
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy (%) overall and per class, and the confusion matrix (rows: true class)."""

    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray
    n: int

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class, "n": self.n}


def evaluate(
    model: nn.Module,
    data: Dataset,
    normalized: bool | None = None,
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> Evaluation:
    """Top-1 accuracy of `model` on `data`; see `predict` for `normalized`."""
    from sklearn.metrics import confusion_matrix

    pred = predict(model, data.images, normalized, batch_size, device).argmax(1).numpy()
    true = data.labels.numpy()
    cm = confusion_matrix(true, pred, labels=range(len(data.classes)))
    support = cm.sum(1)
    per_class = {
        c: float(100 * cm[i, i] / support[i]) if support[i] else float("nan")
        for i, c in enumerate(data.classes)
    }
    return Evaluation(float(100 * (pred == true).mean()), per_class, cm, len(true))
