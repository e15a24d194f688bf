"""The CIFAR-10 MobileNet-V2 teacher, its truncated students, and loading of published weights.

The teacher is torchvision's MobileNetV2 with the two CIFAR changes of huyvnphan/PyTorch_CIFAR10 (stem
stride 1, second stage stride 1), so its state_dict keys are those of the public checkpoint. A student
keeps the first `19 - layers_removed` modules of `features`, freshly initialised, and adds global
average pooling and a new Linear layer (paper.md 1.2).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from igkd import paths
from igkd.errors import CheckpointError, ConfigError

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


# --- checkpoints -----------------------------------------------------------------------------------

PUBLISHED_URL = (
    "https://raw.githubusercontent.com/nordlinglab/ModelCompression-IntegratedGradients/main/"
    "saved_models/ablation/{}"
)


@dataclass(frozen=True)
class Published:
    """One of the seven 4.1x students the authors released (saved_models/ablation)."""

    method: str
    filename: str
    sha256: str
    reported_accuracy: float  # the authors' CIFAR-10 test accuracy, from the file name (%)


PUBLISHED: dict[str, Published] = {
    p.method: p
    for p in [
        Published(
            "AT",
            "CIFAR10_AT_T1_alpha0_p0_gamma0.8_TestAcc91.58.pt",
            "ddb2c19cf70e3df89092b07563cf539b06362c6f92efc4f0f37d5cf383fd9cf6",
            91.58,
        ),
        Published(
            "IG_AT",
            "CIFAR10_IG_AT_T1_alpha0_p0.1_gamma0.8_TestAcc91.84.pt",
            "74bb1a2fed6ebf191279793d8609404da37d24bf2ba8f4b37a6485aca25c16cb",
            91.84,
        ),
        Published(
            "IG",
            "CIFAR10_IG_T1_alpha0_p0.1_gamma0_TestAcc92.01.pt",
            "136ae29f37179d3fd210915a6734ac177b7df0cd43f7ca21bb71d79b334b48d3",
            92.01,
        ),
        Published(
            "KD_AT",
            "CIFAR10_KD_AT_T2.5_alpha0.01_p0_gamma0.8_TestAcc92.2.pt",
            "48e569e503f33c07fc1011d215e4da2f08887fcb3e40cae702e3595cd706444f",
            92.20,
        ),
        Published(
            "KD_IG_AT",
            "CIFAR10_KD_IG_AT_T2.5_alpha0.01_p0.1_gamma0.8_TestAcc92.42.pt",
            "b70a0d9e0aa57a5a735e5c43410d9d6bf7682c85c73c727b99be6bcaaecbb5c9",
            92.42,
        ),
        Published(
            "KD_IG",
            "CIFAR10_KD_IG_T2.5_alpha0.01_p0.1_gamma0_TestAcc92.28.pt",
            "d2bd9089fcce4b58d0d08f40861685b37b895a786d2a88d3c9d336d81264e92c",
            92.28,
        ),
        Published(
            "KD",
            "CIFAR10_KD_T2.5_alpha0.01_p0_gamma0_TestAcc92.29.pt",
            "2686b1fb8e27dabdffc4256e0754a0bea63aa519005404c2ce98f8e0b1d0326a",
            92.29,
        ),
    ]
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Download `url` to `dest` (atomically) and check its SHA-256 when one is given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        torch.hub.download_url_to_file(url, str(tmp), progress=False)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not download {url} ({e}); without internet, copy the file to {dest} "
            "or pass its path"
        ) from None
    if sha256 is not None and (got := sha256_of(tmp)) != sha256:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{url} has SHA-256 {got}, expected {sha256}; not used")
    tmp.replace(dest)
    return dest


def published_path(
    method: str, directory: str | Path | None = None, download_ok: bool = True
) -> Path:
    """Local path of a published student by method (`KD_IG`) or file name; downloads if allowed.

    Looks in `directory`, then `paths.checkpoint_dirs()`; the file's SHA-256 is checked either way.
    """
    entry = PUBLISHED.get(method) or next(
        (p for p in PUBLISHED.values() if p.filename == method), None
    )
    if entry is None:
        raise CheckpointError(
            f"no published checkpoint named {method!r}; known: {', '.join(PUBLISHED)}"
        )
    dirs = [Path(directory).expanduser()] if directory is not None else paths.checkpoint_dirs()
    for d in dirs:
        candidate = d / entry.filename
        if candidate.is_file():
            if (got := sha256_of(candidate)) != entry.sha256:
                raise CheckpointError(
                    f"{candidate} has SHA-256 {got}, expected {entry.sha256}: the file is damaged "
                    "or not the published one; delete it to download it again"
                )
            return candidate
    searched = ", ".join(str(d) for d in dirs)
    if not download_ok:
        raise CheckpointError(f"{entry.filename} not found in {searched}")
    return download(PUBLISHED_URL.format(entry.filename), dirs[-1] / entry.filename, entry.sha256)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict with `torch.load(weights_only=True)`: pickled code is refused, never run.

    Accepts plain state_dicts and dicts wrapping one under `state_dict` / `model` (e.g. Lightning),
    with `model.` / `module.` key prefixes removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found is None:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint") from None
        raise CheckpointError(
            f"{path} needs pickled Python code ({found.group(1)}) to load, which igkd refuses to "
            "execute; re-save it with torch.save(model.state_dict())"
        ) from None
    except Exception as e:  # zip/EOF/format errors come in many types
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({e})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return {re.sub(r"^(model\.|module\.)", "", k): v for k, v in obj.items()}


def _to_features_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the AT wrappers' keys (front_layers.i / middle_layer / end_layers.j) to features.k."""
    fronts = {int(m.group(1)) for k in state if (m := re.match(r"front_layers\.(\d+)\.", k))}
    mid = max(fronts) + 1 if fronts else 0
    out = {}
    for k, v in state.items():
        k = re.sub(r"^front_layers\.(\d+)\.", r"features.\1.", k)
        k = re.sub(r"^middle_layer\.", f"features.{mid}.", k)
        k = re.sub(r"^end_layers\.(\d+)\.", lambda m: f"features.{mid + 1 + int(m.group(1))}.", k)
        out[k] = v
    return out


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: object) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {detail}") from None


def load_student(path: str | Path) -> Student:
    """A student from a state_dict file in either published layout; the architecture is inferred."""
    state = _to_features_layout(read_state_dict(path))
    indices = {int(m.group(1)) for k in state if (m := re.match(r"features\.(\d+)\.", k))}
    if not indices:
        raise CheckpointError(f"{path} has no `features.<i>` weights: not a MobileNet-V2 student")
    kept = max(indices) + 1
    try:
        model = Student(NUM_FEATURES - kept)
    except ConfigError:
        raise CheckpointError(
            f"{path} keeps {kept} feature modules, which is no student of the paper "
            f"(they keep {sorted(NUM_FEATURES - r.layers_removed for r in COMPRESSION_TABLE.values())})"
        ) from None
    _load_into(model, state, path)
    return model.eval()


def load_published(
    path_or_name: str | Path, directory: str | Path | None = None, download_ok: bool = True
) -> Student:
    """One of the authors' seven 4.1x students, by method name (`KD_IG`), file name or path.

    The returned model expects unnormalised [0, 1] inputs (`model.normalized_inputs` is False).
    """
    p = Path(path_or_name).expanduser()
    if not p.is_file():
        p = published_path(str(path_or_name), directory, download_ok)
    return load_student(p)


def load_teacher(path_or_url: str | Path, sha256: str | None = None) -> nn.Module:
    """The teacher with weights from a huyvnphan-layout state_dict, by path or http(s) URL."""
    src = str(path_or_url)
    if re.match(r"https?://", src):
        dest = paths.data_dir() / "checkpoints" / "teacher" / src.rsplit("/", 1)[-1]
        path = dest if dest.is_file() else download(src, dest, sha256)
    else:
        path = Path(src).expanduser()
    if sha256 is not None and (got := sha256_of(path)) != sha256:
        raise CheckpointError(f"{path} has SHA-256 {got}, expected {sha256}")
    model = teacher()
    _load_into(model, read_state_dict(path), path)
    return model.eval()


def load_model(
    source: object, directory: str | Path | None = None, download_ok: bool = True
) -> nn.Module:
    """The trained model, in eval mode, with its input space (`input_space`) set, from any of:

    - a finished teacher or student run: a `runs.Run` or its directory (the input space is the
      run's recipe's);
    - a state_dict file: the teacher (huyvnphan layout, with `features.18.*`) or a student in
      either published layout;
    - a published student by method name (e.g. "KD_IG"), from `directory` or the checkpoint
      folders (`paths.checkpoint_dirs`), downloaded when allowed.

    CheckpointError names what was wrong: an unfinished run, a run without a model, a file that is
    no teacher or student, an unknown name.
    """
    from igkd import runs  # runs imports torch and igkd's metadata: only when a run is loaded

    if isinstance(source, runs.Run) or (
        isinstance(source, (str, Path)) and (Path(source).expanduser() / "config.json").is_file()
    ):
        return _load_run(source if isinstance(source, runs.Run) else runs.open_run(source))
    p = Path(str(source)).expanduser()
    if p.is_file():
        if any(k.startswith("features.18.") for k in read_state_dict(p)):
            return load_teacher(p)
        return load_student(p)
    if str(source) in PUBLISHED:
        return load_published(str(source), directory, download_ok)
    raise CheckpointError(
        f"{source!r} is no run directory, checkpoint file or published method; give a finished "
        f"run, a state_dict (.pt) or one of {', '.join(PUBLISHED)}"
    )


def _load_run(run) -> nn.Module:
    if not run.done:
        raise CheckpointError(f"run {run.path} has not finished (no DONE file); finish it first")
    kind = run.config.get("model") or (run.kind if run.kind == "teacher" else None)
    if kind == "student":
        model: nn.Module = student(layers_removed=run.config["layers_removed"])
    elif kind == "teacher":
        model = teacher()
    else:
        raise CheckpointError(
            f"run {run.path} holds no teacher or student model (kind {run.kind!r})"
        )
    state = run.load_torch("model.pt")
    if state is None:
        raise CheckpointError(f"run {run.path} has no model.pt")
    model.load_state_dict(state)
    recipe = run.config.get("recipe", {})
    if "normalized" in recipe:  # the input space it was trained in
        model.normalized_inputs = bool(recipe["normalized"])
    return model.eval()
