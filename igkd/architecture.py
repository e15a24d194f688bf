"""The architecture per compression factor (notebook 06): layers kept, convolution layers,
parameters, fp32 memory, FLOPs and the attention-transfer layer of the teacher and the eight
students of `models.COMPRESSION_TABLE`, beside the paper's numbers (paper.md 1.2-1.3).

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one forward pass of a single
image: 2 per multiply-accumulate of every convolution (depthwise ones by their groups) and of the
Linear layer; BatchNorm, ReLU6, the residual additions and pooling are not counted (they add
about 1 %). The paper gives no FLOPs; its latency speed-ups (`paper.SPEEDUP`) are shown beside the
FLOP ratio.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.axes import Axes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from igkd import models, paper
from igkd.errors import ConfigError

FLOP_COUNTER = (
    "torch.utils.flop_counter.FlopCounterMode, one forward pass of one image: 2 FLOPs per "
    "multiply-accumulate of the convolutions and the Linear; BN, ReLU6, additions and pooling "
    "not counted"
)


def count_flops(model: nn.Module, input_size: int = 32) -> int:
    """FLOPs of one forward pass of `model` on one 3 x `input_size` x `input_size` image, as
    `FlopCounterMode` counts them (see the module docstring)."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ConfigError(f"input_size={input_size!r}; use a positive integer (pixels)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_convolutions(model: nn.Module) -> int:
    """Convolution layers (`nn.Conv2d` modules, depthwise and pointwise counted each)."""
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def _at_shape(model: nn.Module, layer: int, input_size: int) -> str:
    """Channels x height x width of `model.features[layer]`'s output on one image."""
    with torch.no_grad():
        _, features = models.tapped(model.eval(), torch.zeros(1, 3, input_size, input_size), layer)
    c, h, w = features.shape[1:]
    return f"{c}x{h}x{w}"


def table(input_size: int = 32) -> pd.DataFrame:
    """One row per model, the teacher first, then the eight students by compression: `ratio`
    (teacher parameters / student parameters), `layers_removed` and `layers_kept` (of the 19
    `features` modules), `conv_layers`, `parameters` (trainable), `fp32_mb` (parameters x 4 /
    2**20), `mflops` (per image of `input_size` pixels, see `FLOP_COUNTER`), `flops_ratio`
    (teacher FLOPs / these), `at_layer` (`models.attention_layer`, index of `features`; the teacher
    row: that of the 4.1x student) and `at_shape` (C x H x W there); then the paper's parameters,
    conv layers, MB and AT layer (paper.md 1.2-1.3) and its latency speed-up (`paper.SPEEDUP`).
    Index: the paper's label ("teacher", "2.2", ..., "1122"). Builds each model once (seconds)."""
    built: dict[str, tuple[nn.Module, int, int]] = {
        "teacher": (models.teacher(), 0, models.attention_layer(5))
    }
    for label, row in models.COMPRESSION_TABLE.items():
        layers = row.layers_removed
        built[label] = (
            models.student(layers_removed=layers),
            layers,
            models.attention_layer(layers),
        )
    teacher_flops = count_flops(built["teacher"][0], input_size)
    rows = {}
    for label, (model, removed, at_layer) in built.items():
        params, flops = models.count_parameters(model), count_flops(model, input_size)
        theirs = paper.ARCHITECTURE.get(label, (math.nan, math.nan, math.nan))
        rows[label] = {
            "ratio": models.TEACHER_PARAMETERS / params,
            "layers_removed": removed,
            "layers_kept": models.NUM_FEATURES - removed,
            "conv_layers": count_convolutions(model),
            "parameters": params,
            "fp32_mb": params * 4 / 2**20,
            "mflops": flops / 1e6,
            "flops_ratio": teacher_flops / flops,
            "at_layer": at_layer,
            "at_shape": _at_shape(model, at_layer, input_size),
            "paper parameters": theirs[0],
            "paper conv_layers": theirs[1],
            "paper fp32_mb": theirs[2],
            "paper at_layer": paper.AT_LAYER.get(label, math.nan),
            "paper speed-up": paper.SPEEDUP.get(label, 1.0 if label == "teacher" else math.nan),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def plot(arch: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Parameters, FLOPs (both relative to the teacher) and the paper's latency speed-up against
    the compression factor, log-log: how much of each a smaller student saves."""
    ax = ax or plt.subplots(figsize=(6.5, 3.6))[1]
    students = arch.drop(index="teacher", errors="ignore").sort_values("ratio")
    ax.plot(
        students["ratio"], students["ratio"], marker="o", label="parameters (teacher / student)"
    )
    ax.plot(
        students["ratio"], students["flops_ratio"], marker="s", label="FLOPs (teacher / student)"
    )
    ax.plot(
        students["ratio"],
        students["paper speed-up"],
        marker="x",
        ls="--",
        label="latency speed-up (paper)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(students["ratio"], [f"{r:.3g}x" for r in students["ratio"]])
    ax.minorticks_off()
    ax.set_xlabel("compression factor (teacher parameters / student parameters)")
    ax.set_ylabel("teacher / student")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
