"""Model files: the authors' published students (by name, downloaded and checked), state_dict files
of either key layout, finished runs, and the one loader over all of them (`load_model`).

Split from `igkd.models`, which keeps the architectures; every name here is still reachable as
`igkd.models.<name>`.
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
from torch import nn

from igkd import paths
from igkd.errors import CheckpointError, ConfigError
from igkd.models import COMPRESSION_TABLE, NUM_FEATURES, Student, student, teacher

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


def teacher_file(path_or_url: str | Path, sha256: str | None = None, hint: str = "") -> Path:
    """The local teacher state_dict file: an http(s) URL is downloaded once into
    `<data>/checkpoints/teacher/`; a path must name a file. A given `sha256` that does not match
    is refused. CheckpointError names the problem, followed by `hint`."""
    src = str(path_or_url)
    if re.match(r"https?://", src):
        dest = paths.data_dir() / "checkpoints" / "teacher" / src.rsplit("/", 1)[-1]
        path = dest if dest.is_file() else download(src, dest, sha256)
    else:
        path = Path(src).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"teacher checkpoint {src!r} is not a file; pass the path of a state_dict (.pt) "
                f"or an http(s) URL{hint}"
            )
    if sha256 is not None and (got := sha256_of(path)) != sha256:
        raise CheckpointError(f"{path} has SHA-256 {got}, expected {sha256}; not used")
    return path


def load_teacher(path_or_url: str | Path, sha256: str | None = None) -> nn.Module:
    """The teacher with weights from a huyvnphan-layout state_dict, by path or http(s) URL."""
    path = teacher_file(path_or_url, sha256)
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
        from igkd.provenance import provenance

        came = provenance(run)["imported_from"]
        raise CheckpointError(
            f"run {run.path} has no model.pt"
            + (f": it came from {came}, which carried its metrics only" if came else "")
            + "; delete the run directory and run it again to train its model"
        )
    model.load_state_dict(state)  # an archive's float16 weights are cast back to float32 here
    recipe = run.config.get("recipe", {})
    if "normalized" in recipe:  # the input space it was trained in
        model.normalized_inputs = bool(recipe["normalized"])
    paths.note_model_used(run.kind, run.path.name)
    return model.eval()
