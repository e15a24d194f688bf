"""How a model decides on one class: softened probabilities, misclassification rate, decision distance.

The paper draws, for the cat class at T = 2.5 with 50 samples per class, a probability "mountain"
(each sample's ten class probabilities as a surface) and polar plots (each sample's probabilities
around a circle of the ten classes), and reports a misclassification rate and a "mean decision
distance": 0.10 and 0.316 for the teacher, 0.06 and 0.420 for the KD_IG student (paper.md 7.7).

What the paper's "decision distance" is, is not written anywhere we could read (the figure's code
is not in the published repository). We take the distance of each sample from the decision
boundary in the softened probabilities, and offer two readings of it (`DEFINITIONS`):

- `margin` (the default): p_y - max_{k != y} p_k, the true class's probability minus that of the
  strongest other class, in [-1, 1]. It is positive exactly when the sample is classified right
  (ties aside), negative by how far a misclassified one is on the wrong side, and 0 on the
  boundary. Its mean over a class rewards both being right and being sure.
- `top2`: p_(1) - p_(2), the gap between the two largest probabilities whatever the label, in
  [0, 1]: how far the decision, right or wrong, is from a tie.

Both use p = softmax(z / T) of the logits z at temperature T (the paper's T = 2.5, the KD
temperature), so they measure the soft targets that KD transfers rather than the hard decision.
The misclassification rate is the share of the class's samples whose top class (the argmax, which
T does not change) is not their label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from igkd.errors import ConfigError
from igkd.evaluation import predict

DEFINITIONS = ("margin", "top2")

# paper.md 7.7 (the authors' figure for the cat class, T = 2.5, 50 samples per class): model ->
# (misclassification rate, mean decision distance).
PAPER = {"teacher": (0.10, 0.316), "KD_IG": (0.06, 0.420)}
PAPER_TEMPERATURE = 2.5
PAPER_SAMPLES = 50
PAPER_CLASS = "cat"


def _probabilities(probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor):
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ConfigError(
            f"probabilities {p.shape} and labels {y.shape}; need (N, K) and (N,) for the same N"
        )
    if p.size and ((p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-4)):
        raise ConfigError("probabilities must be non-negative rows summing to 1 (a softmax)")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ConfigError(
            f"labels range over {y.min()}..{y.max()}; the classes are 0..{p.shape[1] - 1}"
        )
    return p, y


def misclassification_rate(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> float:
    """The share of samples whose most probable class is not their label: probabilities (N, K)
    and labels (N,) -> a float in [0, 1] (NaN for no samples)."""
    p, y = _probabilities(probs, labels)
    return float(np.mean(p.argmax(1) != y)) if len(y) else float("nan")


def decision_distance(
    probs: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    definition: str = "margin",
) -> np.ndarray:
    """Each sample's distance from the decision boundary (see the module docstring): probabilities
    (N, K), labels (N,) -> (N,) float64. `margin`: p_y - max_{k != y} p_k in [-1, 1]; `top2`:
    largest minus second-largest probability, in [0, 1]."""
    if definition not in DEFINITIONS:
        raise ConfigError(f"definition={definition!r}; use one of {', '.join(DEFINITIONS)}")
    p, y = _probabilities(probs, labels)
    if p.shape[1] < 2:
        raise ConfigError("a decision distance needs at least two classes")
    if definition == "top2":
        top = np.sort(p, axis=1)
        return top[:, -1] - top[:, -2]
    rows = np.arange(len(y))
    others = p.copy()
    others[rows, y] = -np.inf
    return p[rows, y] - others.max(1)


def softened(
    model: nn.Module,
    images: torch.Tensor,
    temperature: float = PAPER_TEMPERATURE,
    batch_size: int = 500,
) -> np.ndarray:
    """softmax(logits / T) of `model` for uint8 `images` (N, 3, H, W) in its input space: (N, K)."""
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ConfigError(f"temperature={temperature!r}; use a positive number (the paper: 2.5)")
    logits = predict(model, images, batch_size=batch_size)
    return torch.softmax(logits.double() / temperature, dim=1).numpy()


def samples_per_class(labels: torch.Tensor, n: int, classes: int = 10) -> np.ndarray:
    """The indices of the first `n` samples of each class (fewer where a class has fewer), class by
    class: the paper's "50 samples per class"."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"samples={n!r}; use a positive integer (the paper: 50)")
    labels = np.asarray(labels)
    return np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(classes)]).astype(
        np.int64
    )


@dataclass(frozen=True)
class ClassDecisions:
    """One model's softened probabilities on the samples of each class, and their summary."""

    model: str
    probs: np.ndarray  # (N, K) softmax(z / T)
    labels: np.ndarray  # (N,)
    temperature: float
    definition: str

    def of_class(self, c: int) -> np.ndarray:
        """The probabilities (n, K) of the samples of class `c`."""
        return self.probs[self.labels == c]

    def distances(self, c: int) -> np.ndarray:
        """Each sample of class `c`'s decision distance (n,)."""
        keep = self.labels == c
        return decision_distance(self.probs[keep], self.labels[keep], self.definition)

    def row(self, c: int) -> dict:
        """Misclassification rate and mean decision distance on class `c`, with the sample count."""
        keep = self.labels == c
        d = self.distances(c)
        return {
            "samples": int(keep.sum()),
            "misclassification rate": misclassification_rate(self.probs[keep], self.labels[keep]),
            "mean decision distance": float(d.mean()) if len(d) else float("nan"),
        }

    def per_class(self, classes: tuple[str, ...]) -> dict[str, dict]:
        return {name: self.row(c) for c, name in enumerate(classes) if (self.labels == c).any()}


def class_decisions(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = PAPER_TEMPERATURE,
    definition: str = "margin",
    batch_size: int = 500,
) -> dict[str, ClassDecisions]:
    """Each model's softened probabilities on the same `images` (uint8, N) with their `labels`."""
    if definition not in DEFINITIONS:
        raise ConfigError(f"definition={definition!r}; use one of {', '.join(DEFINITIONS)}")
    y = np.asarray(labels, dtype=np.int64)
    return {
        name: ClassDecisions(
            name, softened(m, images, temperature, batch_size), y, temperature, definition
        )
        for name, m in models.items()
    }
