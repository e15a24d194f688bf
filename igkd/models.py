"""The CIFAR-10 MobileNet-V2 teacher and its truncated students (files and loading: igkd.checkpoints).

The teacher is torchvision's MobileNetV2 with the two CIFAR changes of huyvnphan/PyTorch_CIFAR10 (stem
stride 1, second stage stride 1), so its state_dict keys are those of the public checkpoint. A student
keeps the first `19 - layers_removed` modules of `features`, freshly initialised, and adds global
average pooling and a new Linear layer (paper.md 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from igkd.errors import ConfigError

NUM_FEATURES = 19  # modules in the teacher's `features`
TEACHER_PARAMETERS = 2_236_682

# (t, c, n, s): torchvision's ImageNet setting with the second stage's stride 2 -> 1 for 32x32 inputs.
CIFAR_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


@dataclass(frozen=True)
class Compression:
    """One row of the paper's compression table (paper.md 1.2)."""

    label: str  # how the paper names it: "4.1" for 4.1x
    layers_removed: int  # `features` modules removed from the end, out of 19
    parameters: int  # trainable parameters of the student
    feature_channels: int  # channels of the last kept module

    @property
    def ratio(self) -> float:
        """Exact compression factor: teacher parameters / student parameters."""
        return TEACHER_PARAMETERS / self.parameters

    @property
    def fp32_mb(self) -> float:
        """Parameter memory in float32, MiB (the paper's "MB")."""
        return self.parameters * 4 / 2**20


COMPRESSION_TABLE: dict[str, Compression] = {
    c.label: c
    for c in [
        Compression("2.2", 3, 1_019_402, 160),
        Compression("4.1", 5, 543_498, 96),
        Compression("7.3", 7, 306_954, 96),
        Compression("12", 9, 185_738, 64),
        Compression("29", 11, 77_194, 64),
        Compression("55", 13, 40_970, 32),
        Compression("140", 15, 16_042, 24),
        Compression("1122", 17, 1_994, 16),
    ]
}


def compression_row(compression: float | str | None = None, layers_removed: int | None = None):
    """The table row for a compression factor (the paper's label or the exact ratio) or a layer count."""
    if (compression is None) == (layers_removed is None):
        raise ConfigError("give exactly one of compression= or layers_removed=")
    if layers_removed is not None:
        for row in COMPRESSION_TABLE.values():
            if row.layers_removed == layers_removed:
                return row
        accepted = ", ".join(str(r.layers_removed) for r in COMPRESSION_TABLE.values())
        raise ConfigError(
            f"layers_removed={layers_removed!r} is not a paper student; use {accepted}"
        )
    try:
        value = float(compression)
    except (TypeError, ValueError):
        value = float("nan")
    for row in COMPRESSION_TABLE.values():
        # Accept the paper's label (4.1) and the exact ratio to two decimals (4.12, 1121.71).
        if value == float(row.label) or abs(value - row.ratio) <= 0.0051:
            return row
    accepted = ", ".join(f"{r.label} ({r.ratio:.2f})" for r in COMPRESSION_TABLE.values())
    raise ConfigError(f"compression={compression!r} is not one of the paper's factors: {accepted}")


def _cifar_mobilenet_v2() -> torchvision.models.MobileNetV2:
    net = torchvision.models.MobileNetV2(num_classes=10, inverted_residual_setting=CIFAR_SETTING)
    net.features[0][0].stride = (1, 1)  # stem stride 2 -> 1: keep 32x32 resolution
    return net


class Teacher(torchvision.models.MobileNetV2):
    """torchvision's MobileNet-V2 for CIFAR-10 (stem stride 1), same state_dict keys; it owns its
    input space: CIFAR-normalised images (`normalized_inputs`)."""

    normalized_inputs: bool = True

    def __init__(self) -> None:
        super().__init__(num_classes=10, inverted_residual_setting=CIFAR_SETTING)
        self.features[0][0].stride = (1, 1)  # stem stride 2 -> 1: keep 32x32 resolution


def teacher() -> Teacher:
    """The CIFAR-10 MobileNet-V2 teacher, randomly initialised; 2,236,682 parameters.

    Input: (B, 3, 32, 32) normalised with the CIFAR-10 mean and std. Output: (B, 10) logits.
    """
    return Teacher()


def input_space(model: nn.Module) -> bool:
    """Whether `model` expects CIFAR-normalised inputs (True, the teacher) or [0, 1] pixels (False,
    the paper's students): its `normalized_inputs`, which igkd's models declare and `load_model`
    sets from the run's recipe. ConfigError for a model that does not say."""
    normalized = getattr(model, "normalized_inputs", None)
    if normalized not in (True, False):
        raise ConfigError(
            f"{type(model).__name__} does not say its input space; set its normalized_inputs to "
            "True (trained on CIFAR-normalised inputs) or False ([0, 1] pixels)"
        )
    return normalized


class Student(nn.Module):
    """The teacher truncated from the end: `features[:19 - layers_removed]`, pool, Linear(C, 10)."""

    normalized_inputs: bool = False  # the paper's students see [0, 1] pixels

    def __init__(self, layers_removed: int) -> None:
        super().__init__()
        row = compression_row(layers_removed=layers_removed)
        self.layers_removed = layers_removed
        self.compression = row.label
        # Fresh copy of the teacher architecture: MobileNetV2 init (kaiming fan_out, BN 1/0);
        # the new Linear keeps PyTorch's default init, as in the published code.
        self.features = _cifar_mobilenet_v2().features[: NUM_FEATURES - layers_removed]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(row.feature_channels, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def student(
    compression: float | str | None = None, *, layers_removed: int | None = None
) -> Student:
    """A randomly initialised student, by compression factor (2.2 ... 1122) or layers removed.

    >>> student(compression=4.1).layers_removed
    5
    """
    return Student(compression_row(compression, layers_removed).layers_removed)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers and do not count, as in the paper)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- attention-transfer taps -----------------------------------------------------------------------


def attention_layer(layers_removed: int = 5) -> int:
    """Index of the `features` module whose output attention transfer compares (paper.md 1.3).

    The published code splits at 19 // divider, with divider 2 for L in {3, 5, 7} (features[9], 8x8),
    4 for {9, 11, 13} (features[4]), 8 for 15 (features[2]) and 20 for 17 (the stem, features[0]).
    """
    compression_row(layers_removed=layers_removed)
    divider = {3: 2, 5: 2, 7: 2, 9: 4, 11: 4, 13: 4, 15: 8, 17: 20}[layers_removed]
    return NUM_FEATURES // divider


def tapped(
    model: nn.Module, x: torch.Tensor, layer: int | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` on `x` and also return the output of one of its modules: `model.features[layer]`
    for an int (the paper's MobileNet-V2 layers), the submodule of that name for a str (any
    model, e.g. "layer2" of a ResNet).

    A forward hook reads the activation, so the module tree and state_dict keys stay untouched.
    Returns (logits (B, K), features (B, C, H, W)).
    """
    try:
        module = model.features[layer] if isinstance(layer, int) else model.get_submodule(layer)
    except (AttributeError, IndexError, TypeError) as e:
        raise ConfigError(
            f"layer={layer!r} is not a module of {type(model).__name__} ({e}); use an index of "
            "model.features or a submodule name from model.named_modules()"
        ) from None
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[0]


# The model files (published students, state_dict files, runs, `load_model`) live in
# igkd.checkpoints, which imports this module; its names stay reachable here, resolved on first use.
_CHECKPOINT_NAMES = frozenset(
    {
        "PUBLISHED_URL",
        "Published",
        "PUBLISHED",
        "sha256_of",
        "download",
        "published_path",
        "read_state_dict",
        "_to_features_layout",
        "_load_into",
        "load_student",
        "load_published",
        "load_teacher",
        "load_model",
        "_load_run",
    }
)


def __getattr__(name: str) -> object:
    if name in _CHECKPOINT_NAMES:
        from igkd import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(f"module 'igkd.models' has no attribute {name!r}")
