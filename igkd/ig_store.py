"""The store of IG maps: computed once per (teacher, training data, quadrature), resumable, checked.

`precompute_ig` fills `<runs>/ig_maps/<hash>/maps.npy` (float16, one map per training image in
dataset order) in checkpointed chunks, so a killed precompute resumes after its last finished chunk;
`load_ig_maps` refuses a store of another teacher or other data. The algorithm itself is
`igkd.attribution`; this module only decides where its output lives.

A *sample* of a store (`sample_store`, kind `ig_sample`: `SAMPLE_SIZE` maps spread evenly over the
training set, so that a copy stored class by class still shows every class, and the store's
metrics; half a megabyte) is what travels in a lean results archive: enough for chapter 02's
figures, while the 100 MB store itself stays where it was computed. `map_rows` says which training
images a store's or a sample's maps belong to.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import igkd
from igkd import checkpoints
from igkd.attribution import (
    PRECISIONS,
    baseline_input,
    fold_batchnorm,
    ig_map,
    integrated_gradients,
    quadrature,
)
from igkd.data import Dataset
from igkd.errors import CheckpointError, ConfigError
from igkd.runs import Run, get_or_run

STORE_KIND = "ig_maps"
SAMPLE_KIND, SAMPLE_SIZE = "ig_sample", 256


def _teacher_model(teacher_run: Run) -> nn.Module:
    """The trained model of a finished teacher run."""
    if not teacher_run.done:
        raise CheckpointError(
            f"teacher run {teacher_run.path} has not finished; get it with pipeline.teacher_run()"
        )
    return checkpoints.load_model(teacher_run)


def _open_partial(path: Path, shape: tuple[int, ...], dtype: type, resume: bool) -> np.memmap:
    """A writable memory map of `shape`: the kept file when resuming, else a new one."""
    if resume:
        mm = np.lib.format.open_memmap(path, mode="r+")
        if mm.shape != shape or mm.dtype != np.dtype(dtype):
            raise ValueError(f"holds {mm.dtype} {mm.shape}, expected {np.dtype(dtype)} {shape}")
        return mm
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def ig_config(
    teacher_run: str,
    data: Dataset,
    n_steps: int,
    method: str,
    baseline: str,
    precision: str,
    fold_bn: bool = False,
) -> dict:
    """The run-cache config of the IG-map store of teacher run `teacher_run` (its directory name)
    on `data`: what names the store, so a caller can find a finished store, or a run depending on
    one, without computing anything."""
    config = {
        "teacher_run": teacher_run,
        "train_data": data.fingerprint,
        "n_steps": n_steps,
        "method": method,
        "baseline": baseline,
        "precision": precision,
    }
    if fold_bn:  # recorded only when set, so the stores computed before the option keep their hash
        config["fold_bn"] = True
    return config


def precompute_ig(
    teacher_run: Run,
    data: Dataset,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    baseline: str = "normalized-zero",
    precision: str = "fp32",
    batch_size: int = 256,
    chunk_size: int | None = None,
    fold_bn: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Run:
    """The finished IG-map store of `teacher_run` on `data`, computed now if the cache lacks it.

    One map per image of `data` in dataset order (never shuffled, never augmented: the published
    code's IG file was both, paper.md §2), targets = the true labels. The run (kind `ig_maps`,
    config: teacher run, data fingerprint, n_steps, method, baseline, precision) holds
    `maps.npy` float16 (N, H, W) and `completeness.npy` float32 (N, 2): the delta and
    F(x) - F(x') per image. `batch_size` images are computed, written into a memory map, flushed
    and checkpointed at a time, so a killed precompute resumes after its last finished batch.
    `fold_bn=True` folds the teacher's BatchNorm into its convolutions first (1.4-1.6x faster,
    3-5e-4 relative difference; see `fold_batchnorm`). `device` defaults to CUDA when available.
    Read the maps with `load_ig_maps`.
    """
    quadrature(n_steps, method)  # validate before anything is created on disk
    baseline_input(torch.zeros(1, 3, 1, 1), baseline)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; use one of {PRECISIONS}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
    config = ig_config(teacher_run.path.name, data, n_steps, method, baseline, precision, fold_bn)

    def compute(run: Run) -> dict:
        from tqdm.auto import tqdm

        where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = _teacher_model(teacher_run).to(where)
        if fold_bn:
            model = fold_batchnorm(model)  # once, not per batch
        if where.type == "cpu":
            # Gradients near the baseline underflow to denormals, which x86 computes slowly;
            # flushing them to zero is ~10 % faster here (train.fit makes the same choice).
            torch.set_flush_denormal(True)
        n, (h, w) = len(data), data.images.shape[-2:]
        files = {
            "maps": (run.path / "maps.npy", (n, h, w), np.float16),
            "completeness": (run.path / "completeness.npy", (n, 2), np.float32),
        }
        partial = {k: p.with_name(f"{p.stem}.partial.npy") for k, (p, _, _) in files.items()}
        state = run.load_checkpoint()
        start, seconds = (state["next"], state["seconds"]) if state is not None else (0, 0.0)
        for k, (final, _, _) in files.items():
            if start > 0 and final.exists():  # killed between the renames and DONE
                os.replace(final, partial[k])
        try:
            arrays = {
                k: _open_partial(partial[k], s, t, start > 0) for k, (_, s, t) in files.items()
            }
        except (OSError, ValueError) as e:
            warnings.warn(
                f"the partial IG maps in {run.path} cannot be resumed ({e}); starting over",
                stacklevel=2,
            )
            start, seconds = 0, 0.0
            arrays = {k: _open_partial(partial[k], s, t, False) for k, (_, s, t) in files.items()}
        resumed_from, attempt_seconds = start, 0.0
        bar = tqdm(
            total=n, initial=start, unit="img", desc="IG maps", disable=not progress, leave=False
        )
        for i in range(start, n, batch_size):
            j = min(i + batch_size, n)
            t0 = time.perf_counter()
            attr, delta = integrated_gradients(
                model,
                data.images[i:j],
                data.labels[i:j],
                n_steps,
                method,
                baseline,
                chunk_size,
                precision,
            )
            m = ig_map(attr)
            if m.max() > np.finfo(np.float16).max:
                raise ConfigError(
                    f"an IG map value {m.max().item():.4g} at images {i}..{j - 1} overflows "
                    "float16; the teacher's logits are implausibly large"
                )
            arrays["maps"][i:j] = m.cpu().numpy().astype(np.float16)
            gap = attr.flatten(1).sum(1) - delta
            arrays["completeness"][i:j] = torch.stack([delta, gap], 1).cpu().numpy()
            # The rows must be on disk before the checkpoint says they are finished.
            for k in arrays:
                arrays[k].flush()
            attempt_seconds += time.perf_counter() - t0
            seconds += time.perf_counter() - t0
            run.save_checkpoint({"next": j, "seconds": seconds})
            bar.update(j - i)
        bar.close()
        for k in list(arrays):
            arrays.pop(k).flush()  # and drop the last reference, which unmaps the file
        for k, (final, _, _) in files.items():
            os.replace(partial[k], final)

        maps = np.load(files["maps"][0], mmap_mode="r")
        delta, gap = np.load(files["completeness"][0]).T
        relative = np.abs(delta) / np.maximum(np.abs(gap), 1e-6)
        return {
            **config,
            "igkd_version": igkd.__version__,
            "data": data.source,
            "images": n,
            "shape": list(maps.shape),
            "dtype": "float16",
            "teacher_test_accuracy": teacher_run.metrics.get("final_test_accuracy"),
            "seconds": seconds,  # all attempts
            "resumed_from": resumed_from,  # first image the last attempt computed
            # throughput of the last attempt alone (a resumed run's earlier attempts ran elsewhere)
            "images_per_second": (n - resumed_from) / attempt_seconds if attempt_seconds else None,
            "interpolants_per_second": (n - resumed_from) * n_steps / attempt_seconds
            if attempt_seconds
            else None,
            "map_max": float(maps.max()),
            "map_mean": float(maps.mean(dtype=np.float64)),
            "delta_abs_mean": float(np.abs(delta).mean()),
            "delta_relative_median": float(np.median(relative)),
        }

    return get_or_run(STORE_KIND, config, compute)


def load_ig_maps(
    run_or_path: Run | str | Path, data: Dataset, teacher_run: Run | str
) -> np.ndarray:
    """The stored IG maps, (N, H, W) float16, as a read-only memory map in `data`'s order.

    `run_or_path` is an `ig_maps` run or its directory, or an `ig_sample` (then only the maps of
    the rows `map_rows` names); `teacher_run` the teacher run (or its directory name,
    the config hash) the maps must come from. A store that is unfinished, or was computed for
    another teacher or other data (fingerprint), raises CheckpointError.
    """
    if isinstance(run_or_path, Run):
        path = run_or_path.path
    else:
        path = Path(run_or_path).expanduser()
        path = path.parent if path.name == "maps.npy" else path
    run = Run(STORE_KIND, {}, path)
    if not run.done:
        raise CheckpointError(
            f"{path} is not a finished IG-map store (no DONE file); compute it with "
            "ig_store.precompute_ig(...) or pipeline.ig_run(...)"
        )
    stored = run.read_json("config.json")
    config = stored.get("config", {})
    teacher = teacher_run.path.name if isinstance(teacher_run, Run) else str(teacher_run)
    if stored.get("kind") not in (STORE_KIND, SAMPLE_KIND):
        raise CheckpointError(f"{path} holds a {stored.get('kind')!r} run, not IG maps")
    if config.get("teacher_run") != teacher:
        raise CheckpointError(
            f"the IG maps in {path} come from teacher run {config.get('teacher_run')!r}, not "
            f"{teacher!r}; compute the maps for this teacher with pipeline.ig_run(...)"
        )
    if config.get("train_data") != data.fingerprint:
        raise CheckpointError(
            f"the IG maps in {path} were computed on data {config.get('train_data')!r}, not on "
            f"{data.fingerprint!r} ({data.source}, {len(data)} images); compute them for this "
            "data with pipeline.ig_run(...)"
        )
    try:
        maps = np.load(path / "maps.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path / 'maps.npy'} is unreadable ({e}); delete {path} to recompute it"
        ) from e
    rows = len(data) if stored.get("kind") == STORE_KIND else min(config["sample"], len(data))
    if maps.shape != (rows, *data.images.shape[-2:]):
        raise CheckpointError(
            f"{path / 'maps.npy'} has shape {maps.shape}, expected "
            f"{(rows, *data.images.shape[-2:])}; delete {path} to recompute it"
        )
    return maps


# --- a sample of a store, for results that travel ---------------------------------------------------


# How a sample picks its rows; part of its config, so that samples of the first rows (made
# before the spread) are other runs, never taken for one of these.
SPREAD = "evenly spaced"


def _sample_config(store: Run) -> dict:
    return {**store.config, "store": store.path.name, "sample": SAMPLE_SIZE, "rows": SPREAD}


def sample_rows(n: int) -> np.ndarray:
    """The training-set rows (int64, ascending) a sample of a store of `n` maps keeps:
    min(SAMPLE_SIZE, n) evenly spaced from the first to the last."""
    k = min(SAMPLE_SIZE, n)
    return np.linspace(0, n - 1, k).round().astype(np.int64) if k else np.zeros(0, np.int64)


def map_rows(run: Run, n: int) -> np.ndarray:
    """The rows of the training set (of `n` images) whose maps the store or sample `run` holds, in
    its order: all of them for a store, a sample's recorded `rows`."""
    if run.kind == STORE_KIND:
        return np.arange(n, dtype=np.int64)
    return np.asarray(run.metrics["rows"], np.int64)


def planned_sample(store: Run) -> Run:
    """The sample of the store `store` (finished or only planned) as the cache names it."""
    return Run.for_config(SAMPLE_KIND, _sample_config(store))


def sample_store(store: Run) -> Run:
    """The finished sample of the finished store `store`: the maps (float16, (k, H, W)) of the
    rows `sample_rows` picks, and the store's metrics plus `sample` (k), `rows` and `store` (the
    store's hash). Made once, cached."""
    if not store.done:
        raise CheckpointError(f"{store.path} is not a finished IG-map store; nothing to sample")

    def compute(run: Run) -> dict:
        maps = np.load(store.path / "maps.npy", mmap_mode="r")
        rows = sample_rows(len(maps))
        part = np.ascontiguousarray(maps[rows])
        tmp = run.path / ".maps.npy.tmp"
        with open(tmp, "wb") as f:  # np.save on a path would append ".npy" to the temp name
            np.save(f, part)
        os.replace(tmp, run.path / "maps.npy")
        return {
            **store.metrics,
            "sample": len(part),
            "rows": rows.tolist(),
            "store": store.path.name,
        }

    return get_or_run(SAMPLE_KIND, _sample_config(store), compute)
