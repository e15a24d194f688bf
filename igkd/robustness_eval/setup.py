"""Chapter 10's settings and the models it evaluates: a checkpoint folder, the run cache, the teacher."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from igkd import checkpoints, models, paths, pipeline, profile_runs, profiles, robustness
from igkd import corruptions as cifar_c
from igkd.errors import CheckpointError, ConfigError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
BACKENDS = ("torch", "onnxruntime")  # what computes the logits (igkd.robustness_eval.evaluation)
PUBLISHED, RUN_CACHE, TEACHER = "published", "run cache", "teacher"  # the groups of models

# Each setting: the profile's `experiments["robustness_<name>"]` if present, else these.
DEFAULTS: dict[str, dict[str, object]] = {
    # ci: only the code paths are under test. 50 images x (1 + 15 + 3 + 2) sets (noise sigma 0
    # is the clean set) + 50 validation images is 1,100 images per model. At 100 images the ci
    # book's 16 models (7 published, 8 ablation students, the teacher) took 314 s on one thread of
    # a 2-core AVX2 CPU, a quarter of the ci book.
    "ci": dict(
        test_images=50,
        corruptions=cifar_c.BENCHMARK,
        severities=(3,),
        jpeg_qualities=(90, 50, 10),
        noise_sigmas=(0, 8, 24),
        val_images=50,
        workers=1,
        n_boot=2000,
        # ~1,100 images per model: exporting each model to ONNX would cost more than it saves.
        backend="torch",
    ),
    "default": dict(
        test_images=None,
        corruptions=tuple(cifar_c.CORRUPTIONS),
        severities=cifar_c.SEVERITIES,
        jpeg_qualities=(95, 90, 80, 70, 60, 50, 40, 30, 20, 10),
        noise_sigmas=(0, 2, 4, 8, 12, 16, 24, 32, 48),
        val_images=1000,
        workers=None,
        n_boot=2000,
        # Inference only, on ~100,000 images per model: ONNX Runtime ran the 4.1x student 1.9x
        # faster than torch on one thread of a 2-core AVX2 EPYC (logits equal to ~4e-6).
        backend="onnxruntime",
    ),
}


# --- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What chapter 10 evaluates. `test_images` None: the profile's whole test set; `workers` None:
    every CPU generates corrupted sets; `reliability`: the corrupted set of the reliability
    diagram, (corruption, severity); `backend`: what computes the logits, "torch" or
    "onnxruntime" (each model exported once to fp32 ONNX and checked against torch)."""

    profile: str
    test_images: int | None
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    jpeg_qualities: tuple[int, ...]
    noise_sigmas: tuple[float, ...]
    val_images: int
    workers: int | None
    n_boot: int
    reliability: tuple[str, int]
    seed: int = 0  # of the corruptions' random draws and of the bootstrap
    backend: str = "torch"

    @property
    def sets(self) -> int:
        """Test sets per model: clean, every corruption x severity, the JPEG and noise sweeps."""
        return (
            1
            + len(self.corruptions) * len(self.severities)
            + len(self.jpeg_qualities)
            + len(self.noise_sigmas)
        )

    @property
    def computed_sets(self) -> int:
        """`sets` without noise sigma 0, which is the clean set (its logits are read back)."""
        return self.sets - (0.0 in self.noise_sigmas)


def _positive_int(name: str, value: object, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"{name}={value!r}; use a positive integer" + (" or None" if none_ok else "")
        )


def settings(
    profile: str | None = None,
    *,
    test_images: int | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
    jpeg_qualities: Sequence[int] | None = None,
    noise_sigmas: Sequence[float] | None = None,
    val_images: int | None = None,
    workers: int | None = None,
    n_boot: int | None = None,
    reliability: str | tuple[str, int] | None = None,
    seed: int = 0,
    backend: str | None = None,
) -> Settings:
    """The chapter's settings: each argument if given, else the profile's
    `experiments["robustness_<name>"]`, else `DEFAULTS` (ci: 50 test images, the 15 benchmark
    corruptions at severity 3, one process, torch; otherwise the whole test set, all 19 at 1-5,
    every CPU, ONNX Runtime). `corruptions` are names of `igkd.corruptions.CORRUPTIONS`;
    `reliability` is "name:severity" or a tuple (default: gaussian_noise, or the first corruption,
    at the severity nearest 3); `backend` is one of BACKENDS. Raises ConfigError for a bad value
    before anything is computed."""
    prof = profiles.get(profile)
    base = DEFAULTS["ci" if prof.name == "ci" else "default"]

    def pick(name: str, value: object) -> object:
        if value is not None:
            return value
        return prof.experiments.get(f"robustness_{name}", base[name])

    test_images = pick("test_images", test_images)
    _positive_int("test_images", test_images, none_ok=True)
    names = tuple(pick("corruptions", corruptions))
    if not names:
        raise ConfigError(
            "corruptions is empty; name at least one of " + ", ".join(cifar_c.CORRUPTIONS)
        )
    for n in names:
        cifar_c.spec(n)
    sevs = tuple(sorted({cifar_c._check_severity(s) for s in pick("severities", severities)}))
    if not sevs:
        raise ConfigError("severities is empty; use some of 1..5")
    qualities = tuple(pick("jpeg_qualities", jpeg_qualities))
    for q in qualities:
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 95:
            raise ConfigError(f"JPEG quality {q!r}; use integers 1..95")
    sigmas = tuple(float(s) for s in pick("noise_sigmas", noise_sigmas))
    if any(not 0 <= s <= 255 for s in sigmas):
        raise ConfigError(f"noise_sigmas={sigmas}; use standard deviations in pixels, 0..255")
    val_images = pick("val_images", val_images)
    _positive_int("val_images", val_images)
    workers = pick("workers", workers)
    _positive_int("workers", workers, none_ok=True)
    n_boot = pick("n_boot", n_boot)
    _positive_int("n_boot", n_boot)
    if n_boot < 100:
        raise ConfigError(f"n_boot={n_boot}; use at least 100 bootstrap resamples")
    backend = pick("backend", backend)
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}; use one of {', '.join(BACKENDS)}")
    if reliability is None:
        name = "gaussian_noise" if "gaussian_noise" in names else names[0]
        rel = (name, min(sevs, key=lambda s: (abs(s - 3), s)))
    else:
        if isinstance(reliability, str):
            name, _, sev = reliability.partition(":")
            try:
                rel = (name, int(sev))
            except ValueError:
                raise ConfigError(f"reliability={reliability!r}; use 'name:severity'") from None
        else:
            rel = (str(reliability[0]), int(reliability[1]))
        if rel[0] not in names or rel[1] not in sevs:
            raise ConfigError(
                f"reliability={reliability!r} is not among the evaluated sets ({names} at {sevs})"
            )
    return Settings(
        prof.name,
        test_images,
        names,
        sevs,
        qualities,
        sigmas,
        val_images,
        workers,
        n_boot,
        rel,
        seed,
        backend,
    )


# --- the models --------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One model to evaluate: its display name, method (the paper's, "student" or "teacher"),
    group (published, run cache, teacher), seed (run-cache students) and where it came from."""

    name: str
    method: str
    group: str
    model: nn.Module = field(repr=False)
    seed: int | None = None
    source: str = ""

    @property
    def family(self) -> str:
        return robustness.family(self.method)


def method_of_file(path: Path) -> str:
    """The method a checkpoint file's name states: a published file's (`PUBLISHED`), else the
    `CIFAR10_<METHOD>_T<T>_...` part of the authors' naming, else the file's stem."""
    for entry in checkpoints.PUBLISHED.values():
        if entry.filename == path.name:
            return entry.method
    m = re.match(r"CIFAR10_([A-Za-z_]+?)_T\d", path.name)
    return m.group(1) if m else path.stem


def _ignored(path: Path) -> bool:
    """Documentation beside checkpoints (README, SHA256SUMS, markdown) and hidden files."""
    name = path.name
    return (
        name.startswith(".")
        or name.upper().startswith(("README", "SHA256SUMS"))
        or name.endswith(".md")
    )


def from_folder(folder: str | Path) -> tuple[list[Candidate], list[str]]:
    """The students in `folder` (not recursive) and one line for each file skipped.

    Files ending in .pt, .pth or .ckpt are read with `checkpoints.load_student` (plain state_dicts in
    either of the authors' key layouts, weights only, never pickled code); one that is unreadable
    or not a student of the paper is skipped with one line saying why, as is any other file
    (README, SHA256SUMS, markdown and hidden files are passed over silently). A file whose weights
    equal an earlier one's is skipped too."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return [], [f"skipped {folder}: no such folder"]
    found, lines, seen = [], [], {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not _ignored(p)):
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            lines.append(f"skipped {path}: not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
            continue
        try:
            net = checkpoints.load_student(path)
        except CheckpointError as e:
            lines.append(f"skipped {path}: {_short(str(e), path)}")
            continue
        except Exception as e:  # whatever else a foreign file raises: one line, the rest goes on
            lines.append(f"skipped {path}: {type(e).__name__}: {_short(str(e), path)}")
            continue
        key = model_key(net)
        if key in seen:
            lines.append(f"skipped {path}: the same weights as {seen[key]}")
            continue
        seen[key] = path.name
        found.append(
            Candidate(method_of_file(path), method_of_file(path), PUBLISHED, net, source=str(path))
        )
    names = [c.name for c in found]
    for c in found:  # two files naming the same method: tell them apart by file name
        if names.count(c.name) > 1:
            c.name = Path(c.source).stem
    return found, lines


def _short(message: str, path: Path) -> str:
    return " ".join(message.replace(str(path), "the file").split())[:200]


def from_run_cache(profile: str | None = None, which: str = "ablation") -> list[Candidate]:
    """The finished students of the profile in the run cache, named "<method> s<seed>".

    `which`: "ablation" (the students with the methods' preset settings that the summary page
    counts as the profile's ablation: 4.1x, or its ablation regime's size), "all" (every
    finished student of the profile, the compression and, when two share a name, the run folder
    added to the name) or "none"."""
    finished = profile_runs.chosen_students(profile, which)
    out = []
    for run, m in finished:
        seed = run.config.get("seed")
        name = (
            f"{m['method']} s{seed}"
            if which == "ablation"
            else f"{m['method']} {m['compression']}x s{seed}"
        )
        out.append(
            Candidate(name, m["method"], RUN_CACHE, pipeline.load_model(run), seed, str(run.path))
        )
    names = [c.name for c in out]
    for c in out:
        if names.count(c.name) > 1:
            c.name += f" ({Path(c.source).name[:8]})"
    return out


def teacher_of(profile: str | None = None) -> Candidate | None:
    """The profile's teacher run if it has finished (nothing is trained), else None."""
    run = pipeline.planned_teacher(profile)
    if not run.done:
        return None
    return Candidate("teacher", "teacher", TEACHER, pipeline.load_model(run), 0, str(run.path))


def gather(
    profile: str | None = None,
    checkpoint_dir: str | Path | Sequence[str | Path] | None = None,
    run_students: str = "ablation",
    teacher: bool = True,
) -> tuple[list[Candidate], list[str]]:
    """Every model a reader has: the students of `checkpoint_dir` (None: every folder of
    `paths.checkpoint_dirs()` that exists), the run cache's (`from_run_cache(profile,
    run_students)`) and the teacher run (`teacher_of`, if `teacher`); with the lines of the files
    skipped. A student found in two folders counts once."""
    if checkpoint_dir is None:
        folders = [d for d in paths.checkpoint_dirs() if d.is_dir()]
    elif isinstance(checkpoint_dir, str | Path):
        folders = [Path(checkpoint_dir)]
    else:
        folders = [Path(d) for d in checkpoint_dir]
    found: list[Candidate] = []
    lines: list[str] = []
    keys = set()
    for folder in folders:
        got, skipped = from_folder(folder)
        lines += skipped
        for c in got:
            if (k := model_key(c.model)) not in keys:
                keys.add(k)
                found.append(c)
    found += from_run_cache(profile, run_students)
    if note := profile_runs.without_model_note(profile, run_students):  # None for "none"
        lines.append(note)
    if teacher and (t := teacher_of(profile)) is not None:
        found.append(t)
    return found, lines


def model_table(found: Sequence[Candidate]) -> pd.DataFrame:
    """One row per model: group, method, family, seed, compression, parameters, source."""
    rows = []
    for c in found:
        rows.append(
            {
                "model": c.name,
                "group": c.group,
                "method": c.method,
                "family": c.family,
                "seed": c.seed,
                "compression": f"{getattr(c.model, 'compression', '1')}x",
                "parameters": models.count_parameters(c.model),
                "source": Path(c.source).name,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "group",
            "method",
            "family",
            "seed",
            "compression",
            "parameters",
            "source",
        ],
    ).set_index("model")


def model_key(model: nn.Module) -> str:
    """16 hex digits of SHA-256 over the weights (names, shapes, dtypes, values) and the input
    space (`normalized_inputs`): the logits cache's name for a model."""
    h = hashlib.sha256(str(bool(getattr(model, "normalized_inputs", False))).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]
