"""Chapter 10: every model a reader has, on corrupted copies of the test set, and what the IG
overlay buys in robustness and calibration.

The models: the students of a checkpoint folder (the authors' seven files, either key layout, or
any others), the finished students of the profile in the run cache (named by method and seed) and
the profile's teacher run when it exists (never trained here). The data: the profile's test set
(cut to `test_images`, stratified), its CIFAR-10-C copies (`igkd.corruptions.corrupted_set`,
cached), a JPEG quality sweep and a Gaussian noise sweep in pixel units; all of them on top of the
test images as stored, which for our data is the JPEG q75 copy of CIFAR-10. Temperature scaling is
fitted on a stratified validation split of the training set, never on the test set.

Everything is inference: logits are computed once per (model weights, images) and cached under
`<runs>/cache/logits`, and each model's measurements on all sets are a run-cache record (kind
`robustness`, a few hundred kB) that travels in a results archive, so a rerun, a second table or a
reader with the archive costs nothing. The metrics themselves
(mCE, ECE, the paired bootstrap, Holm) are in `igkd.robustness`.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from igkd import corruptions as cifar_c
from igkd import data, models, paths, pipeline, profiles, robustness, runs, stats, train
from igkd.errors import CheckpointError, ConfigError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
RUN_STUDENTS = ("ablation", "all", "none")
PUBLISHED, RUN_CACHE, TEACHER = "published", "run cache", "teacher"  # the groups of models

# Each setting: the profile's `experiments["robustness_<name>"]` if present, else these.
DEFAULTS: dict[str, dict[str, object]] = {
    # ci: only the code paths are under test. 100 images x (1 + 15 + 3 + 2) sets (noise sigma 0
    # is the clean set) + 100 validation images is 2,200 images per model: the 7 published students in ~25 s on one idle core of the
    # 2-core reference machine (~1.4 ms per image), ~60 s on a loaded one
    "ci": dict(
        test_images=100,
        corruptions=cifar_c.BENCHMARK,
        severities=(3,),
        jpeg_qualities=(90, 50, 10),
        noise_sigmas=(0, 8, 24),
        val_images=100,
        workers=1,
        n_boot=2000,
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
    ),
}


# --- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What chapter 10 evaluates. `test_images` None: the profile's whole test set; `workers` None:
    every CPU generates corrupted sets; `reliability`: the corrupted set of the reliability
    diagram, (corruption, severity)."""

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
) -> Settings:
    """The chapter's settings: each argument if given, else the profile's
    `experiments["robustness_<name>"]`, else `DEFAULTS` (ci: 100 test images, the 15 benchmark
    corruptions at severity 3, one process; otherwise the whole test set, all 19 at 1-5,
    every CPU). `corruptions` are names of `igkd.corruptions.CORRUPTIONS`; `reliability` is
    "name:severity" or a tuple (default: gaussian_noise, or the first corruption, at the severity
    nearest 3). Raises ConfigError for a bad value before anything is computed."""
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
    for entry in models.PUBLISHED.values():
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

    Files ending in .pt, .pth or .ckpt are read with `models.load_student` (plain state_dicts in
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
            net = models.load_student(path)
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

    `which`: "ablation" (the 4.1x students with the methods' preset settings that the summary page
    counts as the profile's ablation), "all" (every finished student of the profile, the
    compression and, when two share a name, the run folder added to the name) or "none"."""
    if which not in RUN_STUDENTS:
        raise ConfigError(f"run_students={which!r}; use one of {', '.join(RUN_STUDENTS)}")
    if which == "none":
        return []
    finished = pipeline.finished_students(profile)
    if which == "ablation":
        from igkd import report

        found = report.collect(profile)
        counted = {m["run"] for m in report._students(found, None, "4.1", "ablation")}
        finished = [(r, m) for r, m in finished if r.path.name in counted]
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


# --- logits, cached ------------------------------------------------------------------------------------


def model_key(model: nn.Module) -> str:
    """16 hex digits of SHA-256 over the weights (names, shapes, dtypes, values) and the input
    space (`normalized_inputs`): the logits cache's name for a model."""
    h = hashlib.sha256(str(bool(getattr(model, "normalized_inputs", False))).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def logits(
    model: nn.Module, images: torch.Tensor, fingerprint: str, key: str | None = None
) -> np.ndarray:
    """(N, 10) float32 logits of `model` on uint8 `images` (N, 3, 32, 32), from
    `<runs>/cache/logits/<model key>/<fingerprint>.npy` when there, else `train.predict` (batched,
    in the model's input space) and stored. `fingerprint` names the images (and their labels),
    e.g. a `data.Dataset`'s."""
    key = key or model_key(model)
    path = paths.cache_dir() / "logits" / key / f"{fingerprint}.npy"
    if path.is_file():
        try:
            z = np.load(path)
            if z.shape == (len(images), 10):
                return z
        except (OSError, ValueError):
            pass  # damaged: recompute
    z = train.predict(model, images).numpy().astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, z)
    try:
        paths.atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only runs dir only costs the inference next time
        warnings.warn(f"could not write the logits cache {path}: {e}", stacklevel=2)
    return z


# --- the evaluation ------------------------------------------------------------------------------------

Key = tuple[str, float]  # ("clean", 0), (corruption, severity), ("jpeg", quality), ("noise", sigma)


@dataclass
class Result:
    """What `evaluate` measured. Per test set (`Key`), for the M models in `models` order:
    `correct` (M, N) bool, `ece` and `ece_t` (M,) in % before and after temperature scaling.
    `temperature` (M,) and `val_accuracy` (M,, %) come from the validation images; `logits` keeps
    (M, N, 10) for the clean set and the reliability set only."""

    settings: Settings
    data: str  # the test data's name, e.g. "CIFAR-10 (JPEG q75 copy)"
    images: int
    val_images: int
    val_data: str
    models: list[Candidate]
    labels: np.ndarray  # (N,) int64
    correct: dict[Key, np.ndarray]
    ece: dict[Key, np.ndarray]
    ece_t: dict[Key, np.ndarray]
    temperature: np.ndarray
    val_accuracy: np.ndarray
    logits: dict[Key, np.ndarray]
    seconds: float = math.nan  # wall time of the inference and metrics (generation excluded)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.models]

    def accuracy(self, key: Key) -> np.ndarray:
        """(M,) accuracy (%) of every model on set `key`."""
        return 100.0 * self.correct[key].mean(axis=1)

    def corrupted_keys(self) -> list[Key]:
        return [(n, s) for n in self.settings.corruptions for s in self.settings.severities]


def test_set(s: Settings, data_root: str | Path | None = None) -> data.Dataset:
    """The profile's test set cut to `s.test_images` (stratified, seed 0)."""
    _, test = pipeline.datasets(profiles.get(s.profile), data_root)
    if s.test_images is not None and s.test_images < len(test):
        test = test.subset(data.stratified_subset(test.labels, s.test_images, seed=0))
    return test


def val_set(s: Settings, data_root: str | Path | None = None) -> data.Dataset:
    """`s.val_images` stratified images (seed 0) of the profile's training set: where temperature
    scaling is fitted. Never the test set."""
    train_ds, _ = pipeline.datasets(profiles.get(s.profile), data_root)
    if s.val_images < len(train_ds):
        train_ds = train_ds.subset(data.stratified_subset(train_ds.labels, s.val_images, seed=0))
    return train_ds


def prepare(
    s: Settings,
    found: Sequence[Candidate] | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
) -> float:
    """Generate (or find in the cache) every corrupted copy of the test set; returns seconds.

    `s.workers` processes (None: every CPU) make each set; a cached set is read, not remade. With
    `found`, nothing is made when every one of those models already has its record."""
    from tqdm.auto import tqdm

    if found is not None and all(r.done for r in planned_records(found, s, data_root)):
        return 0.0
    test = test_set(s, data_root)
    start = time.perf_counter()
    todo = [(n, sev) for n in s.corruptions for sev in s.severities]
    for n, sev in tqdm(todo, desc="corrupted sets", disable=not progress):
        cifar_c.corrupted_set(test, n, sev, s.seed, s.workers, progress=progress)
    return time.perf_counter() - start


def _sets(s: Settings, test: data.Dataset):
    """(key, images, fingerprint) of every test set, lazily: clean, corrupted, JPEG, noise."""
    yield ("clean", 0), test.images, test.fingerprint
    for n in s.corruptions:
        for sev in s.severities:
            ds = cifar_c.corrupted_set(test, n, sev, s.seed, s.workers, progress=False)
            yield (n, sev), ds.images, ds.fingerprint
    for q in s.jpeg_qualities:
        images = cifar_c.jpeg(test.images, q)
        yield ("jpeg", q), images, data.fingerprint(images, test.labels)
    for sigma in s.noise_sigmas:
        images = cifar_c.gaussian_noise_pixels(test.images, sigma, s.seed)
        yield ("noise", sigma), images, data.fingerprint(images, test.labels)


RECORD_KIND = "robustness"  # one run per (model, test data, sets): what `evaluate` measured


def set_keys(s: Settings) -> list[Key]:
    """Every test set of `s`, in `_sets` order: clean, corrupted, JPEG, noise."""
    return (
        [("clean", 0)]
        + [(n, sev) for n in s.corruptions for sev in s.severities]
        + [("jpeg", q) for q in s.jpeg_qualities]
        + [("noise", sigma) for sigma in s.noise_sigmas]
    )


def _set_name(key: Key) -> str:
    return f"{key[0]}:{key[1]:g}"


def planned_records(
    found: Sequence[Candidate], s: Settings, data_root: str | Path | None = None
) -> list[runs.Run]:
    """The run-cache record of each model of `found` on the sets of `s`, finished or not: named by
    the model's weights (`model_key`), the test and validation images and the sets, so a model met
    again (or imported with a results archive) is never evaluated twice."""
    test, val = test_set(s, data_root), val_set(s, data_root)
    common = {
        "test_data": test.fingerprint,
        "val_data": val.fingerprint,
        "sets": [_set_name(k) for k in set_keys(s)],
        "reliability": _set_name(s.reliability),
        "seed": s.seed,
        "corruptions_version": cifar_c.VERSION,
    }
    return [
        runs.Run.for_config(RECORD_KIND, {"model": model_key(c.model), **common}) for c in found
    ]


def _measure(
    found: Sequence[Candidate], s: Settings, test: data.Dataset, val: data.Dataset, progress: bool
) -> list[dict[str, np.ndarray]]:
    """Per model of `found`: `correct` (S, N) bool, `ece` and `ece_t` (S,) in %, `temperature`
    and `val_accuracy` (scalars), `clean` and `reliability` logits (N, 10), S = len(set_keys(s)).
    Each corrupted set is made (or read) once and every model evaluated on it."""
    from tqdm.auto import tqdm

    labels = test.labels.numpy().astype(np.int64)
    keys = [model_key(c.model) for c in found]
    out: list[dict] = [{"correct": [], "ece": [], "ece_t": []} for _ in found]
    for i, c in enumerate(found):
        z = logits(c.model, val.images, val.fingerprint, keys[i])
        y = val.labels.numpy()
        out[i]["temperature"] = np.float64(robustness.fit_temperature(z, y))
        out[i]["val_accuracy"] = np.float64(100.0 * float((z.argmax(1) == y).mean()))
    with tqdm(total=s.sets, desc="test sets", disable=not progress or not found) as bar:
        for key, images, fp in _sets(s, test) if found else ():
            for i, c in enumerate(found):
                z, t = logits(c.model, images, fp, keys[i]), out[i]["temperature"]
                out[i]["correct"].append(z.argmax(1) == labels)
                out[i]["ece"].append(robustness.ece(z, labels, from_logits=True))
                out[i]["ece_t"].append(robustness.ece(z / t, labels, from_logits=True))
                if key == ("clean", 0):
                    out[i]["clean"] = z
                if key == s.reliability:
                    out[i]["reliability"] = z
            bar.update()
    for o in out:
        for k in ("correct", "ece", "ece_t"):
            o[k] = np.asarray(o[k])
    return out


def _save_record(
    run: runs.Run, arrays: Mapping[str, np.ndarray], c: Candidate, s: Settings
) -> dict:
    buf = io.BytesIO()
    packed = {**arrays, "correct": np.packbits(arrays["correct"], axis=1)}
    np.savez_compressed(buf, n=np.int64(arrays["correct"].shape[1]), **packed)
    paths.atomic_write_bytes(run.path / "record.npz", buf.getvalue())
    return {
        "model": c.name,
        "method": c.method,
        "group": c.group,
        "source": c.source,
        "sets": int(arrays["correct"].shape[0]),
        "images": int(arrays["correct"].shape[1]),
        "clean_accuracy": float(100.0 * arrays["correct"][0].mean()),
        "environment": profiles.environment(s.profile),
    }


def _load_record(run: runs.Run, sets: int) -> dict[str, np.ndarray] | None:
    """The arrays of a finished record, or None when it is unreadable or of another shape (then
    the model is evaluated again, in memory; the damaged record stays for the user to delete)."""
    try:
        with np.load(run.path / "record.npz") as z:
            out = {k: z[k] for k in z.files}
        n = int(out.pop("n"))
        out["correct"] = np.unpackbits(out["correct"], axis=1, count=n).astype(bool)
    except (OSError, ValueError, KeyError) as e:
        warnings.warn(
            f"robustness record {run.path} is unreadable ({e}); re-evaluating", stacklevel=3
        )
        return None
    if out["correct"].shape[0] != sets:
        return None
    return out


def evaluate(
    found: Sequence[Candidate],
    s: Settings,
    data_root: str | Path | None = None,
    progress: bool = True,
) -> Result:
    """Every model of `found` on every set of `s`: correctness, ECE before and after temperature
    scaling (T fitted per model on `val_set`), logits of the clean and reliability sets.

    Each model's measurements are a run-cache record (`planned_records`): a model recorded before
    (here, or in an imported results archive) is read back; only the others are evaluated, on
    corrupted sets generated first if the cache lacks them (`prepare` does it up front)."""
    test, val = test_set(s, data_root), val_set(s, data_root)
    start = time.perf_counter()
    planned = planned_records(found, s, data_root)
    got: list[dict | None] = [_load_record(r, s.sets) if r.done else None for r in planned]
    todo = [i for i, a in enumerate(got) if a is None]
    measured = _measure([found[i] for i in todo], s, test, val, progress)
    for i, arrays in zip(todo, measured, strict=True):
        got[i] = arrays
        if not planned[i].done:
            runs.get_or_run(
                RECORD_KIND,
                planned[i].config,
                lambda run, a=arrays, c=found[i]: _save_record(run, a, c, s),
            )
    n = len(test)
    keys = set_keys(s)

    def stacked(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.stack([a[name] for a in got]) if got else np.zeros((0, *shape), dtype)

    correct_all = stacked("correct", (len(keys), n), bool)
    ece_all, ece_t_all = stacked("ece", (len(keys),), float), stacked("ece_t", (len(keys),), float)
    return Result(
        s,
        test.source,
        n,
        len(val),
        val.source,
        list(found),
        test.labels.numpy().astype(np.int64),
        {k: correct_all[:, j] for j, k in enumerate(keys)},
        {k: ece_all[:, j] for j, k in enumerate(keys)},
        {k: ece_t_all[:, j] for j, k in enumerate(keys)},
        stacked("temperature", (), float),
        stacked("val_accuracy", (), float),
        {
            ("clean", 0): stacked("clean", (n, 10), np.float32),
            s.reliability: stacked("reliability", (n, 10), np.float32),
        },
        time.perf_counter() - start,
    )


# --- tables ----------------------------------------------------------------------------------------------


def rounded(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """`frame` with every float rounded to `digits` significant digits (the chapter's tables)."""

    def one(x: object) -> object:
        if isinstance(x, float | np.floating) and np.isfinite(x) and x != 0:
            return float(f"{x:.{digits}g}")
        return x

    return frame.map(one) if hasattr(frame, "map") else frame.applymap(one)


def caption(r: Result, what: str = "") -> str:
    """The line printed above every table: the profile, the data and how corruptions meet it."""
    return (
        (f"{what}. " if what else "")
        + f"Profile {r.settings.profile}; data: {r.data}, {r.images:,} test images; "
        + robustness.applied(r.data)
        + "."
    )


def heatmap_table(r: Result) -> pd.DataFrame:
    """Accuracy (%) at each corruption (rows, mean over the severities) for each model (columns),
    with a first row "clean"."""
    rows = {"clean": r.accuracy(("clean", 0))}
    for n in r.settings.corruptions:
        rows[n] = np.mean([r.accuracy((n, sev)) for sev in r.settings.severities], axis=0)
    return pd.DataFrame(rows, index=r.names).T.rename_axis("corruption")


def _groups(r: Result) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(r.models):
        out.setdefault((c.group, c.family), []).append(i)
    return out


def severity_table(r: Result) -> pd.DataFrame:
    """Accuracy (%) against severity (rows; 0 = clean) for each (group, family) of models
    (columns): the mean over the family's models and the corruptions."""
    cols = {}
    for (group, fam), idx in _groups(r).items():
        values = [r.accuracy(("clean", 0))[idx].mean()]
        for sev in r.settings.severities:
            values.append(
                np.mean([r.accuracy((n, sev))[idx].mean() for n in r.settings.corruptions])
            )
        cols[f"{group}: {fam} ({len(idx)})"] = values
    return pd.DataFrame(cols, index=pd.Index([0, *r.settings.severities], name="severity"))


def curve_table(r: Result, kind: str) -> pd.DataFrame:
    """Accuracy (%) of each model (columns) along the JPEG quality sweep (`kind` "jpeg", rows:
    quality, 95 first) or the Gaussian noise sweep ("noise", rows: sigma in pixel units)."""
    if kind == "jpeg":
        params, label = r.settings.jpeg_qualities, "JPEG quality"
    elif kind == "noise":
        params, label = r.settings.noise_sigmas, "noise sigma (pixels, 0..255)"
    else:
        raise ConfigError(f"kind={kind!r}; use 'jpeg' or 'noise'")
    rows = {p: r.accuracy((kind, p)) for p in params}
    return pd.DataFrame(rows, index=r.names).T.rename_axis(label)


def reference_for(r: Result, group: str, reference: str = "AT") -> tuple[str, list[int]]:
    """The mCE reference of `group`'s models: its plain students ("student", their errors averaged
    over their runs) if it has any, else its models of method `reference`, else the same search
    over every model; (its name, model indices), or ("", []) when none is found."""
    for pool in ([i for i, c in enumerate(r.models) if c.group == group], range(len(r.models))):
        for method in ("student", reference):
            idx = [i for i in pool if r.models[i].method == method]
            if not idx:
                continue
            label = r.models[idx[0]].name if len(idx) == 1 else f"{method} (mean of {len(idx)})"
            if r.models[idx[0]].group != group:
                label += f" of the {r.models[idx[0]].group} models"
            return label, idx
    return "", []


def _errors(r: Result, idx: Sequence[int]) -> tuple[dict[tuple[str, int], float], float]:
    """Top-1 errors (%) per (corruption, severity) and clean, averaged over the models `idx`."""
    errs = {k: float(100.0 - r.accuracy(k)[list(idx)].mean()) for k in r.corrupted_keys()}
    return errs, float(100.0 - r.accuracy(("clean", 0))[list(idx)].mean())


def summary_table(r: Result, reference: str = "AT") -> pd.DataFrame:
    """One row per model: group, method, seed, family, clean and mean corrupted accuracy (%), mCE
    and relative mCE (%, Hendrycks & Dietterich, against `reference_for` the model's group; NaN
    unless all 15 benchmark corruptions were evaluated; relative mCE as `relative_mce`), the
    temperature T and ECE (%) clean and corrupted (mean over the corrupted sets) before and after
    temperature scaling. `attrs`: "reference" says which reference each group used, "relative"
    which corruptions relative mCE left out ('' when none)."""
    rows, refs, excluded = [], {}, {}
    ckeys = r.corrupted_keys()
    bench = all(n in r.settings.corruptions for n in cifar_c.BENCHMARK)
    for i, c in enumerate(r.models):
        if c.group not in refs:
            refs[c.group] = reference_for(r, c.group, reference)
        label, idx = refs[c.group]
        mce = rel = math.nan
        if bench and idx:
            ref_err, ref_clean = _errors(r, idx)
            own, own_clean = _errors(r, [i])
            try:
                mce = robustness.mce(own, ref_err)
            except ConfigError:  # the reference is never wrong on some corruption
                pass
            rel, skipped = relative_mce(own, ref_err, own_clean, ref_clean)
            excluded.setdefault(c.group, skipped)
        rows.append(
            {
                "model": c.name,
                "group": c.group,
                "method": c.method,
                "seed": c.seed,
                "family": c.family,
                "clean (%)": float(r.accuracy(("clean", 0))[i]),
                "corrupted (%)": float(np.mean([r.accuracy(k)[i] for k in ckeys])),
                "mCE (%)": mce,
                "relative mCE (%)": rel,
                "T": float(r.temperature[i]),
                "ECE clean (%)": float(r.ece[("clean", 0)][i]),
                "ECE clean, T (%)": float(r.ece_t[("clean", 0)][i]),
                "ECE corrupted (%)": float(np.mean([r.ece[k][i] for k in ckeys])),
                "ECE corrupted, T (%)": float(np.mean([r.ece_t[k][i] for k in ckeys])),
            }
        )
    table = pd.DataFrame(rows, columns=["model", *robustness.SUMMARY_COLUMNS]).set_index("model")
    parts = [f"{g}: {label}" for g, (label, idx) in refs.items() if idx]
    table.attrs["reference"] = "; ".join(parts) if parts else "none"
    if not bench:
        table.attrs["reference"] += " (mCE needs all 15 benchmark corruptions: not computed)"
    notes = [
        f"{g}: relative mCE over {len(cifar_c.BENCHMARK) - len(x)} of the 15 benchmark corruptions "
        f"(the reference loses no accuracy under {', '.join(x)})"
        for g, x in excluded.items()
        if x
    ]
    table.attrs["relative"] = "; ".join(notes)
    return table


def relative_mce(
    errors: robustness.Errors,
    reference: robustness.Errors,
    clean_error: float,
    reference_clean_error: float,
) -> tuple[float, list[str]]:
    """`robustness.relative_mce` over the benchmark corruptions whose relative CE is defined:
    those where the reference's summed error exceeds its clean error. On our JPEG q75 copy a mild
    blur can cost a model nothing (or even help), which leaves Hendrycks' ratio undefined there.
    Returns (relative mCE %, NaN if no corruption is left; the corruptions left out)."""
    ces, skipped = [], []
    for name in cifar_c.BENCHMARK:
        own = {k: v for k, v in errors.items() if k[0] == name}
        try:
            ce = robustness.relative_corruption_error(
                own, reference, clean_error, reference_clean_error
            )
            ces.append(ce[name])
        except ConfigError:
            skipped.append(name)
    return (float(np.mean(ces)) if ces else math.nan), skipped


def temperature_table(r: Result) -> pd.DataFrame:
    """Per model: T, accuracy (%) on the validation images (training images, which every model
    here was trained on) and on the clean test images, and the clean and corrupted-set ECE (%)
    before and after scaling by T."""
    ckeys = r.corrupted_keys()
    return pd.DataFrame(
        {
            "T": r.temperature,
            "validation accuracy (%)": r.val_accuracy,
            "test accuracy (%)": r.accuracy(("clean", 0)),
            "ECE clean (%)": r.ece[("clean", 0)],
            "ECE clean, T (%)": r.ece_t[("clean", 0)],
            f"ECE {r.settings.reliability[0]} s{r.settings.reliability[1]} (%)": r.ece[
                r.settings.reliability
            ],
            f"ECE {r.settings.reliability[0]} s{r.settings.reliability[1]}, T (%)": r.ece_t[
                r.settings.reliability
            ],
            "ECE corrupted, mean (%)": np.mean([r.ece[k] for k in ckeys], axis=0),
            "ECE corrupted, mean, T (%)": np.mean([r.ece_t[k] for k in ckeys], axis=0),
        },
        index=pd.Index(r.names, name="model"),
    )


def _family_members(r: Result, group: str) -> tuple[list[int], list[int]]:
    idx = [i for i, c in enumerate(r.models) if c.group == group]
    return (
        [i for i in idx if r.models[i].family == robustness.IG],
        [i for i in idx if r.models[i].family == robustness.NO_IG],
    )


def _with_holm(table: pd.DataFrame, p_column: str) -> pd.DataFrame:
    per = [k for k in table.index if k not in (robustness.CLEAN, robustness.ALL, robustness.DROP)]
    table["p_holm"], table["reject"] = np.nan, False
    if per:
        adjusted, reject = robustness.holm(table.loc[per, p_column].to_numpy())
        table.loc[per, "p_holm"], table.loc[per, "reject"] = adjusted, reject
    return table


def family_bootstrap(r: Result, group: str = PUBLISHED) -> pd.DataFrame | None:
    """IG overlay minus no overlay among `group`'s models, by a paired bootstrap over test images
    (`robustness.bootstrap_differences`, `r.settings.n_boot` resamples): rows "clean", each
    corruption (its severities pooled), "all corruptions" and "all corruptions - clean" (the
    difference in the accuracy lost to corruption); a family's accuracy is the mean of its models'.
    Holm across the corruption rows (p_holm, reject at 0.05). None unless the group has models of
    both families."""
    ig, free = _family_members(r, group)
    if not ig or not free:
        return None
    s = r.settings

    def stack(idx: list[int], keys: list[Key]) -> np.ndarray:  # (models, sets, N) as 0/1
        return np.stack([r.correct[k][idx] for k in keys], axis=1).astype(np.float64)

    clean_key = [("clean", 0)]
    rows = {robustness.CLEAN: (stack(ig, clean_key), stack(free, clean_key))}
    for n in s.corruptions:
        keys = [(n, sev) for sev in s.severities]
        rows[n] = (stack(ig, keys), stack(free, keys))
    all_keys = r.corrupted_keys()
    a_all, b_all = stack(ig, all_keys), stack(free, all_keys)
    rows[robustness.ALL] = (a_all, b_all)
    rows[robustness.DROP] = (
        a_all.mean(axis=1) - stack(ig, clean_key)[:, 0],
        b_all.mean(axis=1) - stack(free, clean_key)[:, 0],
    )
    table = robustness.bootstrap_differences(rows, s.n_boot, s.seed)
    table = table.rename(
        columns={"a (%)": f"{robustness.IG} (%)", "b (%)": f"{robustness.NO_IG} (%)"}
    )
    table.attrs.update(a=[r.names[i] for i in ig], b=[r.names[i] for i in free], group=group)
    return _with_holm(table, "p")


def seed_comparison(r: Result, group: str = RUN_CACHE) -> pd.DataFrame | None:
    """IG overlay minus no overlay among `group`'s models across seeds: per seed, each family's
    mean accuracy over its methods; a paired t-test across the seeds both families have
    (`stats.compare(paired=True)`), per row as `family_bootstrap`'s, with Holm across the
    corruptions. None with fewer than two shared seeds."""
    ig, free = _family_members(r, group)
    seeds_ig = {r.models[i].seed for i in ig} - {None}
    seeds_free = {r.models[i].seed for i in free} - {None}
    common = sorted(seeds_ig & seeds_free)
    if len(common) < 2:
        return None
    s = r.settings

    def acc(keys: list[Key], idx: list[int]) -> np.ndarray:  # (models,) mean accuracy over keys
        return np.mean([r.accuracy(k)[idx] for k in keys], axis=0)

    def per_seed(keys: list[Key], idx: list[int], minus: list[Key] | None = None) -> list[float]:
        out = []
        for seed in common:
            chosen = [i for i in idx if r.models[i].seed == seed]
            v = acc(keys, chosen)
            if minus is not None:
                v = v - acc(minus, chosen)
            out.append(float(v.mean()))
        return out

    wanted = {robustness.CLEAN: [("clean", 0)]}
    wanted.update({n: [(n, sev) for sev in s.severities] for n in s.corruptions})
    wanted[robustness.ALL] = r.corrupted_keys()
    rows = {}
    with warnings.catch_warnings():  # identical values: scipy warns, the table shows NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, keys in wanted.items():
            rows[name] = stats.compare(per_seed(keys, ig), per_seed(keys, free), paired=True)
        rows[robustness.DROP] = stats.compare(
            per_seed(r.corrupted_keys(), ig, [("clean", 0)]),
            per_seed(r.corrupted_keys(), free, [("clean", 0)]),
            paired=True,
        )
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("what")
    table.attrs.update(seeds=common, group=group)
    return _with_holm(table, "p")


def records(
    r: Result,
    summary: pd.DataFrame,
    bootstrap: Mapping[str, pd.DataFrame | None],
    seeds: Mapping[str, pd.DataFrame | None],
) -> list[dict]:
    """`report.save_results("robustness", ...)` records: one per model ({"kind": "model", ...the
    summary row}) and one per family comparison ({"kind": "difference", "group", "test", "diff",
    "ci_low", "ci_high", "p", "clean_diff"}), each with the data, images and sets evaluated."""
    common = {
        "data": r.data,
        "images": r.images,
        "corruptions": len(r.settings.corruptions),
        "severities": list(r.settings.severities),
    }

    def plain(v: object) -> object:
        if isinstance(v, np.generic):
            v = v.item()
        return None if isinstance(v, float) and math.isnan(v) else v

    out = []
    for name, row in summary.iterrows():
        out.append(
            {"kind": "model", "model": name, **{k: plain(v) for k, v in row.items()}, **common}
        )
    for group, t in bootstrap.items():
        if t is not None:
            a, c = t.loc[robustness.ALL], t.loc[robustness.CLEAN]
            out.append(
                {
                    "kind": "difference",
                    "group": group,
                    "test": "paired bootstrap over test images",
                    "ig_models": len(t.attrs.get("a", [])),
                    "other_models": len(t.attrs.get("b", [])),
                    "diff": float(a["difference (pp)"]),
                    "ci_low": float(a["ci_low"]),
                    "ci_high": float(a["ci_high"]),
                    "p": float(a["p"]),
                    "clean_diff": float(c["difference (pp)"]),
                    **common,
                }
            )
    for group, t in seeds.items():
        if t is not None:
            a, c = t.loc[robustness.ALL], t.loc[robustness.CLEAN]
            out.append(
                {
                    "kind": "difference",
                    "group": group,
                    "test": f"paired t across {len(t.attrs.get('seeds', []))} seeds",
                    "seeds": len(t.attrs.get("seeds", [])),
                    "diff": float(a["diff"]),
                    "ci_low": plain(float(a["ci_low"])),
                    "ci_high": plain(float(a["ci_high"])),
                    "p": plain(float(a["p"])),
                    "clean_diff": float(c["diff"]),
                    **common,
                }
            )
    return out


# --- figures -----------------------------------------------------------------------------------------


def _nothing(ax, title: str):
    ax.text(0.5, 0.5, "no model to show", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return ax


def plot_heatmap(table: pd.DataFrame, title: str = "", ax=None):
    """`heatmap_table` as a heat map (accuracy %, 0-100), each cell labelled."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(2 + 0.75 * table.shape[1], 0.9 + 0.32 * table.shape[0]))
    if table.empty:
        return _nothing(ax, title)
    im = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for (y, x), v in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(
            x,
            y,
            f"{v:.3g}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v < 60 else "black",
        )
    ax.figure.colorbar(im, ax=ax, label="top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    return ax


def plot_lines(table: pd.DataFrame, xlabel: str, title: str = "", ax=None, invert_x: bool = False):
    """Each column of `table` against its index, markers on the measured points."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    if table.empty or not len(table.columns):
        return _nothing(ax, title)
    for col in table.columns:
        ax.plot(table.index, table[col], "o-", label=str(col), ms=3)
    if len(table.index) <= 12:
        ax.set_xticks(list(table.index))
    ax.set(xlabel=xlabel, ylabel="top-1 accuracy (%)", title=title, ylim=(0, 100))
    if invert_x:
        ax.invert_xaxis()
    ax.legend(fontsize=7, ncol=2 if table.shape[1] > 6 else 1)
    ax.title.set_fontsize(9)
    return ax


def plot_reliability(r: Result, n_bins: int = 10):
    """Reliability diagrams, one line per (group, family) pooling its models' predictions: rows the
    clean and the reliability corrupted set, columns before and after temperature scaling (each
    model's logits divided by its own T)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 8), sharex=True, sharey=True)
    fig.suptitle(caption(r), fontsize=8)
    if not r.models:
        for ax in axes.ravel():
            _nothing(ax, "")
        return fig
    sets = [("clean", 0), r.settings.reliability]
    for row, key in enumerate(sets):
        z_all = r.logits[key]
        for col, scaled in enumerate((False, True)):
            ax = axes[row, col]
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            for (group, fam), idx in _groups(r).items():
                z = np.concatenate([z_all[i] / (r.temperature[i] if scaled else 1.0) for i in idx])
                y = np.tile(r.labels, len(idx))
                t = robustness.reliability(z, y, n_bins, from_logits=True)
                e = robustness.ece(z, y, n_bins, from_logits=True)
                ok = t["count"] > 0
                ax.plot(
                    t["confidence"][ok],
                    t["accuracy"][ok],
                    "o-",
                    ms=3,
                    label=f"{group}: {fam} (ECE {e:.3g} %)",
                )
            name = "clean" if key[0] == "clean" else f"{key[0]} s{key[1]}"
            ax.set_title(
                f"{name}, {'after' if scaled else 'before'} temperature scaling", fontsize=9
            )
            ax.legend(fontsize=7, loc="upper left")
            ax.set(xlim=(0, 1), ylim=(0, 1))
    for ax in axes[1]:
        ax.set_xlabel("mean confidence (top-1 probability)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    return fig


def timing(r: Result) -> str:
    """One line: models, sets, images and the inference throughput of `evaluate`."""
    n = len(r.models) * (r.settings.computed_sets * r.images + r.val_images)
    return (
        f"{len(r.models)} model(s) x {r.settings.computed_sets} test sets x {r.images:,} images "
        f"(+ {r.val_images:,} validation images each): {n:,} images in {r.seconds:.4g} s "
        f"({n / max(r.seconds, 1e-9):.4g} images/s, logits cache included)"
    )
