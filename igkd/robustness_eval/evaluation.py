"""Chapter 10's evaluation: logits cached per model and image set, one run-cache record per model."""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from igkd import corruptions as cifar_c
from igkd import data, paths, pipeline, profiles, robustness, runs, train
from igkd.errors import CheckpointError
from igkd.robustness_eval.setup import (
    Candidate,
    Settings,
    model_key,
)

# --- logits, cached ------------------------------------------------------------------------------------


ONNX_TOLERANCE = 1e-3  # max |logit difference| from torch that an ONNX export may have


class Predictor:
    """Logits of one model by `backend` ("torch" or "onnxruntime"), the ONNX file and session made
    only when first needed. `key` is the model's `model_key`, which names its cache files."""

    def __init__(self, model: nn.Module, key: str, backend: str = "torch") -> None:
        self.model, self.key, self.backend, self._session = model, key, backend, None

    @property
    def cache_key(self) -> str:
        """The logits cache's folder name: torch's logits and ONNX Runtime's are kept apart."""
        return self.key if self.backend == "torch" else f"{self.key}-{self.backend}"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self.backend == "torch":
            z = train.predict(self.model, images)
        else:
            from igkd import onnx_export

            if self._session is None:
                self._session = onnx_export.onnx_session(onnx_file(self.model, self.key))
            z = onnx_export.onnx_predict(self._session, images)
        return z.numpy().astype(np.float32)


def onnx_file(model: nn.Module, key: str) -> Path:
    """`<runs>/cache/onnx/<key>.onnx`, `model` exported to fp32 ONNX once and reused. A file that
    does not load, or whose logits differ from torch's by more than ONNX_TOLERANCE on random
    images, is exported again; an export that still differs raises CheckpointError."""
    from igkd import onnx_export

    path = paths.cache_dir() / "onnx" / f"{key}.onnx"
    if path.is_file():
        try:
            if onnx_export.max_logit_difference(model, path) <= ONNX_TOLERANCE:
                return path
            why = "its logits differ from the model's"
        except Exception as e:  # onnxruntime's errors have no common base class
            why = f"it does not load ({type(e).__name__})"
        warnings.warn(f"ONNX cache {path}: {why}; exporting again", stacklevel=3)
    onnx_export.export_onnx(model, path, description=f"robustness model {key}")
    diff = onnx_export.max_logit_difference(model, path)
    if diff > ONNX_TOLERANCE:
        raise CheckpointError(
            f"the ONNX export of model {key} differs from torch by {diff:.3g} in a logit "
            f"(tolerance {ONNX_TOLERANCE}); evaluate with backend='torch'"
        )
    return path


def logits(
    model: nn.Module | Predictor, images: torch.Tensor, fingerprint: str, key: str | None = None
) -> np.ndarray:
    """(N, 10) float32 logits of `model` on uint8 `images` (N, 3, 32, 32), from
    `<runs>/cache/logits/<model key>/<fingerprint>.npy` when there, else computed (a plain model:
    `train.predict`, batched, in the model's input space; a `Predictor`: by its backend, cached
    apart) and stored. `fingerprint` names the images (and their labels), e.g. a
    `data.Dataset`'s."""
    predict = model if isinstance(model, Predictor) else Predictor(model, key or model_key(model))
    path = paths.cache_dir() / "logits" / predict.cache_key / f"{fingerprint}.npy"
    if path.is_file():
        try:
            z = np.load(path)
            if z.shape == (len(images), 10):
                return z
        except (OSError, ValueError):
            pass  # damaged: recompute
    z = predict(images)
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
    found: Sequence[Candidate],
    s: Settings,
    data_root: str | Path | None = None,
    sets: tuple[data.Dataset, data.Dataset] | None = None,
) -> list[runs.Run]:
    """The run-cache record of each model of `found` on the sets of `s`, finished or not: named by
    the model's weights (`model_key`, the record config's "model"), the test and validation images
    and the sets, so a model met again (or imported with a results archive) is never evaluated
    twice. `sets`: (test_set, val_set) when the caller has them already."""
    test, val = sets if sets is not None else (test_set(s, data_root), val_set(s, data_root))
    common = {
        "test_data": test.fingerprint,
        "val_data": val.fingerprint,
        "sets": [_set_name(k) for k in set_keys(s)],
        "reliability": _set_name(s.reliability),
        "seed": s.seed,
        "corruptions_version": cifar_c.VERSION,
        # torch's records keep the hashes they had before ONNX Runtime became a choice
        **({} if s.backend == "torch" else {"backend": s.backend}),
    }
    return [
        runs.Run.for_config(RECORD_KIND, {"model": model_key(c.model), **common}) for c in found
    ]


def _measure(
    found: Sequence[Candidate],
    keys: Sequence[str],
    s: Settings,
    test: data.Dataset,
    val: data.Dataset,
    progress: bool,
) -> list[dict[str, np.ndarray]]:
    """Per model of `found` (whose `model_key`s are `keys`): `correct` (S, N) bool, `ece` and
    `ece_t` (S,) in %, `temperature` and `val_accuracy` (scalars), `clean` and `reliability`
    logits (N, 10), S = len(set_keys(s)). Each corrupted set is made (or read) once and every
    model evaluated on it."""
    from tqdm.auto import tqdm

    labels = test.labels.numpy().astype(np.int64)
    out: list[dict] = [{"correct": [], "ece": [], "ece_t": []} for _ in found]
    predictors = [Predictor(c.model, k, s.backend) for c, k in zip(found, keys, strict=True)]
    for i in range(len(found)):
        z = logits(predictors[i], val.images, val.fingerprint)
        y = val.labels.numpy()
        out[i]["temperature"] = np.float64(robustness.fit_temperature(z, y))
        out[i]["val_accuracy"] = np.float64(100.0 * float((z.argmax(1) == y).mean()))
    with tqdm(total=s.sets, desc="test sets", disable=not progress or not found) as bar:
        for key, images, fp in _sets(s, test) if found else ():
            for i in range(len(found)):
                z, t = logits(predictors[i], images, fp), out[i]["temperature"]
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
    planned = planned_records(found, s, sets=(test, val))
    got: list[dict | None] = [_load_record(r, s.sets) if r.done else None for r in planned]
    todo = [i for i, a in enumerate(got) if a is None]
    keys = [planned[i].config["model"] for i in todo]  # model_key, hashed once per model
    measured = _measure([found[i] for i in todo], keys, s, test, val, progress)
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
