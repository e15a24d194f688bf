"""`import igkd`: the public functions someone applying the method to their own models uses."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import igkd
from igkd.errors import ConfigError


def test_import_is_light_and_every_public_name_resolves():
    code = "import igkd, sys; assert 'torch' not in sys.modules; print(len(igkd.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(igkd.__all__)
    for name in igkd.__all__:
        assert getattr(igkd, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        igkd.nope  # noqa: B018


class Tiny(nn.Module):
    def __init__(self, width: int, normalized_inputs: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
        self.normalized_inputs = normalized_inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _data(n: int = 64) -> igkd.Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    return igkd.Dataset(images, labels, tuple(map(str, range(10))), "random", "fp", "train")


def test_own_models_distil_with_named_layers_and_ig_maps():
    ds = _data()
    torch.manual_seed(0)
    teacher = Tiny(16, normalized_inputs=True).eval()
    maps = igkd.ig_maps(teacher, ds.images, ds.labels, n_steps=2, batch_size=24)
    assert maps.shape == (64, 32, 32) and maps.dtype == torch.float32 and (maps >= 0).all()
    direct = igkd.ig_map(igkd.integrated_gradients(teacher, ds.images[:5], ds.labels[:5], 2)[0])
    assert torch.allclose(maps[:5], direct.cpu())
    student = Tiny(4, normalized_inputs=False)
    distill = igkd.Distillation(
        igkd.method("KD_IG_AT"), teacher, maps, student_layer="body", teacher_layer="body"
    )
    recipe = igkd.Recipe(epochs=1, batch_size=16)
    out = igkd.fit(student, ds, recipe, test=ds, progress=False, distill=distill)
    assert 0 <= out["final_test_accuracy"] <= 100
    assert igkd.predict(student, ds.images[:3]).shape == (3, 10)
    wrong = igkd.Distillation(igkd.method("AT"), teacher, student_layer="nope")
    with pytest.raises(ConfigError, match="layer='nope' is not a module of Tiny"):
        igkd.fit(Tiny(4, False), ds, recipe, progress=False, distill=wrong)
    del teacher.normalized_inputs  # a model that does not say its input space is refused
    with pytest.raises(ConfigError, match="does not say its input space"):
        igkd.fit(Tiny(4, False), ds, recipe, progress=False, distill=distill)
