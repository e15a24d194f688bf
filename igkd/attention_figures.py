"""What the AT students attend to: their attention maps beside the teacher's, at the AT layer.

The attention map is the one attention transfer matches (`losses.attention_map`, paper.md §4):
for the output F (C, H, W) of the AT layer (`models.attention_layer`: features[9] for the 4.1x
student, 8 x 8), a = mean over channels of F^2, flattened and divided by its L2 norm. The paper
shows the teacher's map beside the AT, KD_AT, IG_AT and KD_IG_AT students', one test image per
class (paper.md 7.7); `compare` computes them for any set of students on any images and measures
how alike each student's maps are to the teacher's: the cosine similarity of the two maps of each
image. The maps are unit vectors, so that is their dot product, 1 for the same map. It cannot be
negative (the maps are non-negative), and a map spread evenly over the 64 positions already has a
cosine of mean/rms with any other, so a student trained without AT is the reference to read it by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from igkd import stats
from igkd.data import to_float
from igkd.errors import ConfigError
from igkd.losses import attention_map
from igkd.models import input_space, tapped


def attention_maps(
    model: nn.Module, images: torch.Tensor, layer: int | str, batch_size: int = 32
) -> torch.Tensor:
    """The attention maps of `model` at `layer` (an index of `model.features`, or a submodule name)
    for uint8 `images` (N, 3, H, W), fed in the model's input space: (N, h, w) float32 on the CPU,
    each of unit L2 norm (h, w: the layer's output size, 8 x 8 at features[9])."""
    return _maps_and_logits(model, images, layer, batch_size)[0]


def _maps_and_logits(
    model: nn.Module, images: torch.Tensor, layer: int | str, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention maps (N, h, w), logits (N, K)) in one pass, in small channels_last batches as
    `train.predict` runs them on a CPU (its CPU_PREDICT_BATCH): batches of 50 ran twice as fast
    as 200 at once on the 2-core reference CPU."""
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ConfigError(
            f"images are {images.dtype} {tuple(images.shape)}; expected uint8 (N, 3, H, W)"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; use a positive integer")
    normalized = input_space(model)
    device = next(model.parameters()).device
    model = model.to(memory_format=torch.channels_last).eval()
    maps, logits = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = to_float(images[i : i + batch_size].to(device), normalized)
            out, features = tapped(model, x.contiguous(memory_format=torch.channels_last), layer)
            maps.append(attention_map(features).view(len(x), *features.shape[-2:]).cpu())
            logits.append(out.float().cpu())
    if not maps:
        return torch.zeros(0, 0, 0), torch.zeros(0, 0)
    return torch.cat(maps), torch.cat(logits)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Cosine similarity of the maps `a` and `b` image by image: (N, h, w) or (N, h*w) each ->
    (N,) float64 in [-1, 1] (in [0, 1] for attention maps, which are non-negative)."""
    if a.shape != b.shape or a.dim() not in (2, 3):
        raise ConfigError(
            f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)}; need equal (N, h, w) or "
            "(N, h*w) (the same layer's maps of the same images)"
        )
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).numpy()


def one_per_class(labels: torch.Tensor, classes: int = 10) -> list[int]:
    """The index of the first image of each class that has one, in class order."""
    labels = torch.as_tensor(labels)
    return [int(torch.nonzero(labels == c)[0]) for c in range(classes) if (labels == c).any()]


@dataclass(frozen=True)
class AttentionComparison:
    """`compare`'s result: the teacher's and each student's maps (N, h, w) of the same images, and
    each student's cosine similarity to the teacher, image by image."""

    layer: int | str
    teacher: torch.Tensor
    students: dict[str, torch.Tensor]
    similarity: dict[str, np.ndarray]
    accuracy: dict[str, float]  # "teacher" and each student: top-1 (%) on these images, if labelled

    @property
    def images(self) -> int:
        return len(self.teacher)

    def mean_similarity(self) -> dict[str, float]:
        """Each student's mean cosine similarity to the teacher."""
        return {name: float(np.mean(s)) for name, s in self.similarity.items()}

    def table(self) -> list[dict]:
        """One row per student: mean cosine similarity to the teacher, its 95 % t interval over the
        images, sd, and the number of images."""
        rows = []
        for name, s in self.similarity.items():
            d = stats.describe(s) if len(s) else {"mean": np.nan, "sd": np.nan}
            rows.append(
                {
                    "student": name,
                    "mean cosine to teacher": d["mean"],
                    "95 % CI low": d.get("ci_low", np.nan),
                    "95 % CI high": d.get("ci_high", np.nan),
                    "sd over images": d["sd"],
                    "images": len(s),
                }
            )
        return rows

    def difference(self, a: str, b: str) -> dict:
        """Paired t-test over the images of the similarity of student `a` against student `b`
        (`stats.compare`): does `a` look more like the teacher than `b` on these images? One run
        each, so it describes these two models, not their methods."""
        for name in (a, b):
            if name not in self.similarity:
                raise ConfigError(f"no student {name!r}; compared: {', '.join(self.similarity)}")
        return stats.compare(self.similarity[a], self.similarity[b], paired=True)


def compare(
    teacher: nn.Module,
    students: Mapping[str, nn.Module],
    images: torch.Tensor,
    layer: int | str,
    labels: torch.Tensor | None = None,
    batch_size: int = 32,
) -> AttentionComparison:
    """The attention maps at `layer` of the teacher and of each student on uint8 `images`
    (N, 3, H, W), each student's cosine similarity to the teacher image by image, and, with
    `labels` (N,), every model's accuracy on the images (from the same forward pass). The layers
    must give maps of the same size (features[9] does for the teacher and the 2.2x-7.3x students)."""
    t, t_logits = _maps_and_logits(teacher, images, layer, batch_size)
    accuracy = {}

    def score(name: str, logits: torch.Tensor) -> None:
        if labels is not None and len(logits):
            right = logits.argmax(1) == torch.as_tensor(labels)
            accuracy[name] = float(100 * right.float().mean())

    score("teacher", t_logits)
    maps, sims = {}, {}
    for name, model in students.items():
        maps[name], logits = _maps_and_logits(model, images, layer, batch_size)
        if maps[name].shape != t.shape:
            raise ConfigError(
                f"{name}: attention maps {tuple(maps[name].shape[1:])} at layer {layer!r}, the "
                f"teacher's {tuple(t.shape[1:])}; compare at a layer where both have the same size"
            )
        sims[name] = cosine_similarity(maps[name], t)
        score(name, logits)
    return AttentionComparison(layer, t, maps, sims, accuracy)
