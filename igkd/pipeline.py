"""The run kinds and how each obtains what it depends on, through the run cache.

Notebooks, the CLI and sweeps call these functions; each returns a finished run, training or
computing it (and whatever it depends on) only when the cache does not already hold it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from igkd import checkpoints, data, models, paths, profiles, runs, teachers, train
from igkd.config import StudentConfig
from igkd.errors import CheckpointError

# One column of chapter 03's table, built where the other result tables are; kept importable here.
from igkd.experiments import student_summary  # noqa: F401
from igkd.ig_store import (
    STORE_KIND,
    ig_config,
    load_ig_maps,
    map_rows,
    planned_sample,
    precompute_ig,
)
from igkd.profiles import Profile


def datasets(prof: Profile, root: str | Path | None = None) -> tuple[data.Dataset, data.Dataset]:
    """(train, test) of the profile: CIFAR-10 (synthetic only as the ci profile's fallback),
    cut to the profile's sizes by seeded stratified subsets. Real data is kept in memory per
    process for the same sizes and folders: planning a sweep names every run, and each name needs
    the data's fingerprint (reading and hashing 150 MB took 2-5 s a time on a 2-core CPU)."""
    key = (prof.train_size, prof.test_size, prof.synthetic_fallback)
    key += (str(Path(root).expanduser().resolve()) if root is not None else None,)
    key += (str(paths.data_dir()), str(paths.cache_dir()))
    if key in _LOADED:
        return _LOADED[key]
    out = []
    for split, size in (("train", prof.train_size), ("test", prof.test_size)):
        ds = data.load("cifar10", split, root, synthetic_fallback=prof.synthetic_fallback)
        if size is not None and size < len(ds):
            ds = ds.subset(data.stratified_subset(ds.labels, size, seed=0))
        out.append(ds)
    pair = (out[0], out[1])
    if pair[0].source != "synthetic":  # the fallback warns each time it is used: not kept
        if len(_LOADED) >= 4:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = pair
    return pair


_LOADED: dict[tuple, tuple[data.Dataset, data.Dataset]] = {}


def teacher_run(
    profile: str | None = None,
    seed: int = 0,
    recipe: dict | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    *,
    teacher_checkpoint: str | Path | None = None,
) -> runs.Run:
    """The finished teacher run of the profile (trained now if the cache lacks it).

    `recipe` overrides fields of the profile's teacher recipe. The run holds model.pt, history.csv
    and metrics.json (final and best test accuracy, per-class accuracy, time, data, environment).
    With `teacher_checkpoint` (or $IGKD_TEACHER; see `igkd.teachers`) it is instead the run of that
    file, scored on the profile's test set; nothing is trained and `seed` and `recipe` are unused.
    """
    prof = profiles.get(profile)
    if (spec := teachers.given(teacher_checkpoint)) is not None:
        return teachers.run_of(spec, datasets(prof, data_root)[1], prof.name)
    r = train.Recipe(**{**prof.teacher_recipe, **(recipe or {})})
    train_ds, test_ds = datasets(prof, data_root)
    config = _teacher_config(r, seed, train_ds, test_ds)

    def compute(run: runs.Run) -> dict:
        torch.manual_seed(seed)  # the initial weights are part of what the seed fixes
        model = models.teacher()
        metrics = train.fit(model, train_ds, r, seed=seed, run=run, test=test_ds, progress=progress)
        run.save_torch("model.pt", model.state_dict())
        return {
            **metrics,
            "data": train_ds.source,
            "train_images": len(train_ds),
            "test_images": len(test_ds),
            "environment": profiles.environment(prof.name, seed),
        }

    return runs.get_or_run("teacher", config, compute)


def _teacher_config(r: train.Recipe, seed: int, train_ds: data.Dataset, test_ds: data.Dataset):
    return {
        "model": "teacher",
        "recipe": dataclasses.asdict(r),
        "seed": seed,
        "train_data": train_ds.fingerprint,
        "test_data": test_ds.fingerprint,
    }


def planned_teacher(
    profile: str | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    *,
    teacher_checkpoint: str | Path | None = None,
) -> runs.Run:
    """The teacher run of `teacher_run`'s arguments as the cache names it, finished or not;
    nothing is trained."""
    prof = profiles.get(profile)
    train_ds, test_ds = datasets(prof, data_root)
    if (spec := teachers.given(teacher_checkpoint)) is not None:
        return teachers.planned(spec, test_ds)
    return runs.Run.for_config(
        "teacher", _teacher_config(train.Recipe(**prof.teacher_recipe), seed, train_ds, test_ds)
    )


# The one model loader (runs, checkpoint files, published names), here too for the notebooks' sake.
load_model = checkpoints.load_model


def teacher_model(
    profile: str | None = None,
    teacher_checkpoint: str | Path | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
    progress: bool = True,
) -> tuple[nn.Module, str, runs.Run]:
    """(teacher model, where it came from, its run): the run of the state_dict file
    `teacher_checkpoint` (path or http(s) URL, huyvnphan layout; or $IGKD_TEACHER) when given, else
    the profile's teacher run of `seed`, trained if the cache lacks it. The one place chapters 01,
    07 and 08 make this choice."""
    prof = profiles.get(profile)
    run = teacher_run(
        prof.name, seed, data_root=data_root, progress=progress,
        teacher_checkpoint=teacher_checkpoint,
    )  # fmt: skip
    acc, on = run.metrics["final_test_accuracy"], run.metrics["data"]
    if "checkpoint" in run.metrics:
        where = f"checkpoint {run.metrics['checkpoint']} ({acc:.4g} % on {on})"
    else:
        where = f"{prof.name} teacher run {run.path.name} ({acc:.4g} % on {on})"
    return load_model(run), where, run


def ig_run(
    profile: str | None = None,
    seed: int = 0,
    *,
    teacher: runs.Run | None = None,
    teacher_checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    method: str = "gausslegendre",
    baseline: str = "normalized-zero",
    precision: str = "fp32",
    fold_bn: bool = False,
    images: data.Dataset | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    _plan: bool = False,
) -> runs.Run:
    """The finished IG-map store for the profile's training set (computed now if missing).

    The maps are the IG of `teacher` (default: `teacher_run(profile, seed, teacher_checkpoint=)`,
    the given file's run or the profile's own, trained if missing) on the profile's training
    images in dataset order, or on `images` (a subset of them) when given; `n_steps` None takes
    the profile's `ig_n_steps`. Read them with `load_ig_maps(run, train_data, teacher_run)`, where
    `train_data` is the same dataset.
    """
    prof = profiles.get(profile)
    if teacher is None:
        given = {"teacher_checkpoint": teacher_checkpoint}
        teacher = (
            planned_teacher(prof.name, seed, data_root, **given)
            if _plan
            else teacher_run(prof.name, seed, data_root=data_root, progress=progress, **given)
        )
    train_ds = images if images is not None else datasets(prof, data_root)[0]
    steps = n_steps if n_steps is not None else prof.ig_n_steps
    if _plan:
        config = ig_config(teacher.path.name, train_ds, steps, method, baseline, precision, fold_bn)
        return runs.Run.for_config(STORE_KIND, config)
    return precompute_ig(
        teacher,
        train_ds,
        n_steps=steps,
        method=method,
        baseline=baseline,
        precision=precision,
        batch_size=prof.ig_batch_size,
        chunk_size=prof.ig_chunk_size,
        fold_bn=fold_bn,
        progress=progress,
    )


def planned_ig(profile: str | None = None, seed: int = 0, **settings: Any) -> runs.Run:
    """`ig_run`'s store as the cache names it, finished or not; nothing is trained or computed
    (only the data is read, for its fingerprint). `settings` are `ig_run`'s keyword arguments."""
    return ig_run(profile, seed, **settings, _plan=True)


def ig_maps_for_figures(
    profile: str | None = None,
    seed: int = 0,
    *,
    teacher: runs.Run | None = None,
    sample_ok: bool = True,
    data_root: str | Path | None = None,
    progress: bool = True,
    **settings: object,
) -> tuple[runs.Run, np.ndarray, np.ndarray]:
    """(run, maps, rows) for showing IG maps: the store of `ig_run(...)` and all its maps (N, H, W)
    float16; or, when that store is not here but a sample of it is (a lean results archive
    carries one) and `sample_ok`, the sample's run (kind `ig_sample`) and its `ig_store.SAMPLE_SIZE`
    maps, with nothing trained or computed. `rows` (int64) are the training-set indices of the
    maps, in order (`ig_store.map_rows`). `settings` are `ig_run`'s (teacher_checkpoint, n_steps,
    method, baseline, precision, fold_bn)."""
    prof = profiles.get(profile)
    train_ds, _ = datasets(prof, data_root)
    store = planned_ig(prof.name, seed, teacher=teacher, data_root=data_root, **settings)
    sample = planned_sample(store)
    if store.done or not sample_ok or not sample.done:
        store, maps = _store_and_maps(prof, seed, teacher, train_ds, data_root, progress, settings)
        return store, maps, map_rows(store, len(train_ds))
    maps = load_ig_maps(sample, train_ds, store.config["teacher_run"])
    return sample, maps, map_rows(sample, len(train_ds))


def _store_and_maps(prof, seed, teacher, train_ds, data_root, progress, settings):
    if teacher is None:
        teacher = teacher_run(
            prof.name, seed, data_root=data_root, progress=progress,
            teacher_checkpoint=settings.pop("teacher_checkpoint", None),
        )  # fmt: skip
    settings.pop("teacher_checkpoint", None)  # the teacher run given already names its file
    store = ig_run(
        prof.name, seed, teacher=teacher, data_root=data_root, progress=progress, **settings
    )
    return store, load_ig_maps(store, train_ds, teacher)


def student_run(
    config: StudentConfig | float | str = 4.1,
    method: str | None = None,
    *,
    data_root: str | Path | None = None,
    progress: bool = True,
    purpose: dict | None = None,
    _plan: bool = False,
    **settings: Any,
) -> runs.Run:
    """The finished student run of `config` (a `StudentConfig`, or a compression with the other
    StudentConfig fields as `method` and keyword arguments), trained now if the cache lacks it.
    `purpose` (`config.purpose(...)`) tags the run, new or reused, with the experiment it serves.

    Gets or trains the teacher and gets or computes the IG maps it needs, through the run cache.
    The run holds model.pt, history.csv and metrics.json (with the validation split's accuracy
    when `val_fraction` > 0). The teacher and the IG maps stay those of the whole training set,
    except a store of IG settings other than the profile's for a run on a subset (`own_ig_store`).
    """
    c = StudentConfig.of(config, method=method, **settings)
    s = c.settings()
    prof, row, m, r = profiles.get(c.profile), c.row, c.weights, c.recipe
    full_train, test_ds = datasets(prof, data_root)
    train_idx, val_ds = _split(full_train, c.splits)
    train_ds = full_train.subset(train_idx) if train_idx is not None else full_train
    uses_teacher = c.needs_teacher
    # The teacher and the IG store are named (their cache paths) before they are obtained, so a
    # finished student (e.g. imported from an archive without the IG store) is read back without
    # training its teacher or computing its maps.
    given = {"teacher_checkpoint": c.teacher_checkpoint}
    ig = {"n_steps": c.ig_n_steps, "baseline": c.ig_baseline}
    t_run = planned_teacher(prof.name, data_root=data_root, **given) if uses_teacher else None
    i_run = None
    if own_ig_store(c):
        ig["images"] = train_ds
    if m.overlay_prob > 0:
        i_run = planned_ig(prof.name, teacher=t_run, data_root=data_root, **ig)
    config = c.cache_config(
        teacher_run=t_run.path.name if t_run is not None else None,
        ig_run=i_run.path.name if i_run is not None else None,
        train_data=train_ds.fingerprint,
        test_data=test_ds.fingerprint,
        val_data=val_ds.fingerprint if val_ds is not None else None,
    )
    if _plan:
        return runs.Run.for_config("student", config)

    def compute(run: runs.Run) -> dict:
        nonlocal t_run, i_run
        planned = (t_run, i_run)
        if uses_teacher:  # obtained only now: trained or computed if the cache lacks them
            t_run = teacher_run(prof.name, data_root=data_root, progress=progress, **given)
        if i_run is not None:
            i_run = ig_run(prof.name, teacher=t_run, data_root=data_root, progress=progress, **ig)
        for want, got in zip(planned, (t_run, i_run), strict=True):
            if want is not None and want.path != got.path:  # a bug, not a user error
                raise RuntimeError(f"planned {want.path} but obtained {got.path}")
        teacher = load_model(t_run) if m.needs_teacher else None
        layer = models.attention_layer(row.layers_removed)
        cached = None
        if m.needs_teacher and c.teacher_outputs == "cached":
            cached = train.teacher_outputs(teacher, train_ds, layer)
        maps = None
        if i_run is not None:  # float16 on disk, over the images the store covers; overlay: float32
            covered = ig.get("images", full_train)
            stored = load_ig_maps(i_run, covered, t_run)
            if train_idx is not None and covered is full_train:
                stored = stored[train_idx.numpy()]
            maps = torch.from_numpy(np.asarray(stored, np.float32))
        distill = train.Distillation(
            m,
            teacher,
            maps,
            c.teacher_outputs,
            cached,
            student_layer=layer,
            teacher_layer=layer,
            overlay_order=c.overlay_order,
        )
        torch.manual_seed(c.seed)
        student = models.student(layers_removed=row.layers_removed)
        metrics = train.fit(
            student,
            train_ds,
            r,
            seed=c.seed,
            run=run,
            test=test_ds,
            val=val_ds,
            progress=progress,
            distill=distill,
        )
        run.save_torch("model.pt", student.state_dict())
        return {
            **metrics,
            "method": c.method,
            "compression": row.label,
            "compression_ratio": row.ratio,
            "parameters": row.parameters,
            "data": train_ds.source,
            "train_images": len(train_ds),
            "test_images": len(test_ds),
            **({"val_images": len(val_ds)} if val_ds is not None else {}),
            "teacher_test_accuracy": t_run.metrics["final_test_accuracy"] if t_run else None,
            "settings": s,
            "environment": profiles.environment(prof.name, c.seed),
        }

    run = runs.get_or_run("student", config, compute)
    if purpose is not None:
        run.add_purpose(purpose)
    return run


def own_ig_store(c: StudentConfig) -> bool:
    """Whether a student of `c` overlays maps from a store of its own training images only.

    The profile's store covers the whole training set, since nearly every IG student of every
    chapter shares it. A store of other settings (the fix ablation's baseline and step count)
    serves only the few runs that ask for them, so when they train on a subset it covers just
    those images: the quick fix ablation's two extra stores cost a fifth (20 % of the images)."""
    prof = profiles.get(c.profile)
    default_baseline = StudentConfig.ig_baseline  # the dataclass default: the paper's baseline
    other = c.ig_n_steps not in (None, prof.ig_n_steps) or c.ig_baseline != default_baseline
    return other and c.needs_ig and bool(c.splits)


def student_images(
    profile: str | None, splits: Mapping[str, Any], data_root: str | Path | None = None
) -> data.Dataset:
    """The training images of a student run with `splits` (`StudentConfig.splits`): the
    profile's training set, less the validation split, cut to the training fraction."""
    full, _ = datasets(profiles.get(profile), data_root)
    idx, _ = _split(full, dict(splits))
    return full.subset(idx) if idx is not None else full


def planned_student(
    config: StudentConfig | float | str = 4.1, method: str | None = None, **settings: Any
) -> runs.Run:
    """The student run of `student_run`'s arguments as the cache names it, finished or not; nothing
    is trained (only the data is read, for its fingerprint)."""
    return student_run(config, method, **settings, _plan=True)


def _split(train_ds: data.Dataset, s: dict) -> tuple[torch.Tensor | None, data.Dataset | None]:
    """(indices of the training images used or None for all, validation set or None) of the
    split settings `s` (`StudentConfig.splits`): validation split first, then the training
    fraction of the rest."""
    if "split_seed" not in s:
        return None, None
    idx, val = torch.arange(len(train_ds)), None
    if "val_fraction" in s:
        idx, val_idx = data.train_val_split(train_ds.labels, s["val_fraction"], s["split_seed"])
        val = train_ds.subset(val_idx)
    if "train_fraction" in s:
        keep = data.stratified_subset(train_ds.labels[idx], s["train_fraction"], s["split_seed"])
        idx = idx[keep]
    return idx, val


STUDENT_METRICS = ("method", "compression", "final_test_accuracy", "environment")


def finished_students(
    profile: str | None = None, with_model: bool = True
) -> list[tuple[runs.Run, dict]]:
    """(run, metrics) of the finished student runs in the run cache made by `student_run`, oldest
    first; of one profile when `profile` is given. Runs whose metrics lack what `student_run`
    records (made by other tools, or another igkd's) or cannot be read are skipped, and so, with
    `with_model`, are runs without their model.pt (imported from a metrics-only archive)."""
    wanted = profiles.resolve(profile) if profile is not None else None
    found = []
    for run in runs.find_runs("student"):
        try:
            m = run.metrics
        except CheckpointError:
            continue
        if not all(k in m for k in STUDENT_METRICS) or "layers_removed" not in run.config:
            continue
        if with_model and not (run.path / "model.pt").is_file():
            continue
        if wanted is None or m["environment"].get("profile") == wanted:
            found.append((run, m))
    return found
