"""The run kinds and how each obtains what it depends on, through the run cache.

Notebooks, the CLI and sweeps call these functions; each returns a finished run, training or
computing it (and whatever it depends on) only when the cache does not already hold it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from igkd import data, models, profiles, runs, train
from igkd.profiles import Profile


def datasets(prof: Profile, root: str | Path | None = None) -> tuple[data.Dataset, data.Dataset]:
    """(train, test) of the profile: CIFAR-10 (synthetic only as the ci profile's fallback),
    cut to the profile's sizes by seeded stratified subsets."""
    out = []
    for split, size in (("train", prof.train_size), ("test", prof.test_size)):
        ds = data.load("cifar10", split, root, synthetic_fallback=prof.synthetic_fallback)
        if size is not None and size < len(ds):
            ds = ds.subset(data.stratified_subset(ds.labels, size, seed=0))
        out.append(ds)
    return out[0], out[1]


def teacher_run(
    profile: str | None = None,
    seed: int = 0,
    recipe: dict | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
) -> runs.Run:
    """The finished teacher run of the profile (trained now if the cache lacks it).

    `recipe` overrides fields of the profile's teacher recipe. The run holds model.pt, history.csv
    and metrics.json (final and best test accuracy, per-class accuracy, time, data, environment).
    """
    prof = profiles.get(profile)
    r = train.Recipe(**{**prof.teacher_recipe, **(recipe or {})})
    train_ds, test_ds = datasets(prof, data_root)
    config = {
        "model": "teacher",
        "recipe": dataclasses.asdict(r),
        "seed": seed,
        "train_data": train_ds.fingerprint,
        "test_data": test_ds.fingerprint,
    }

    def compute(run: runs.Run) -> dict:
        torch.manual_seed(seed)  # the initial weights are part of what the seed fixes
        model = models.teacher()
        metrics = train.fit(model, train_ds, r, seed=seed, run=run, test=test_ds, progress=progress)
        run.save_torch("model.pt", model.state_dict())
        final = train.evaluate(model, test_ds)
        return {
            **metrics,
            "per_class_test_accuracy": final.per_class,
            "data": train_ds.source,
            "train_images": len(train_ds),
            "test_images": len(test_ds),
            "environment": profiles.environment(prof.name, seed),
        }

    return runs.get_or_run("teacher", config, compute)


def load_model(run: runs.Run) -> nn.Module:
    """The trained model of a finished teacher run."""
    model = models.teacher()
    model.load_state_dict(run.load_torch("model.pt"))
    return model.eval()
