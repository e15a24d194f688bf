"""Student runs on part of the training set: Train80Rand subsets and a held-out validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_ci_profile

from igkd import paths, pipeline, profiles, runs
from igkd.config import StudentConfig
from igkd.errors import ConfigError

# The config keys of a student run before train_fraction / val_fraction / split_seed existed: a
# default run must keep exactly these, or the runs already cached under their hashes are orphaned.
DEFAULT_KEYS = {
    "model",
    "layers_removed",
    "method",
    "recipe",
    "seed",
    "teacher_run",
    "ig_run",
    "teacher_outputs",
    "overlay_order",
    "train_data",
    "test_data",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The ci profile cut to 200 synthetic images, so a teacher, IG maps and students take seconds."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("splits")
    mp.setenv("IGKD_RUNS", str(root / "runs"))
    mp.setenv("IGKD_DATA", str(root / "no-data"))
    with tiny_ci_profile(mp) as name:
        yield name
    mp.undo()


class _FakeRun:
    def __init__(self, name: str) -> None:
        self.path = Path("/nowhere") / name
        self.metrics = {"final_test_accuracy": 50.0}


@pytest.fixture
def configs(tiny, monkeypatch):
    """Call student_run(...) -> the (kind, config) it would run, without training anything."""
    monkeypatch.setattr(pipeline, "teacher_run", lambda *a, **k: _FakeRun("teacher"))
    monkeypatch.setattr(pipeline, "ig_run", lambda *a, **k: _FakeRun("ig"))
    monkeypatch.setattr(runs, "get_or_run", lambda kind, config, fn: (kind, config))

    def config(**kwargs) -> dict:
        with pytest.warns(UserWarning, match="synthetic"):
            kind, cfg = pipeline.student_run(profile=tiny, progress=False, **kwargs)
        assert kind == "student"
        return cfg

    return config


@pytest.mark.parametrize("method", ["student", "KD", "KD_IG_AT"])
def test_default_runs_keep_their_config_and_hash(configs, method):
    cfg = configs(method=method, seed=2)
    assert set(cfg) == DEFAULT_KEYS
    train_ds, test_ds = pipeline.datasets(profiles.get("ci"))
    assert cfg["train_data"] == train_ds.fingerprint and cfg["test_data"] == test_ds.fingerprint
    # Passing the defaults explicitly, or a split seed that draws nothing, is the same run.
    same = configs(method=method, seed=2, train_fraction=1.0, val_fraction=0.0, split_seed=7)
    assert runs.config_hash("student", same) == runs.config_hash("student", cfg)


def test_train80rand_draws_a_stratified_subset_per_seed(configs):
    a = configs(method="student", seed=0, train_fraction=0.8)
    b = configs(method="student", seed=1, train_fraction=0.8)
    c = configs(method="student", seed=1, train_fraction=0.8, split_seed=0)
    assert a["train_fraction"] == 0.8 and (a["split_seed"], b["split_seed"]) == (0, 1)
    assert "val_fraction" not in a and "val_data" not in a
    assert a["train_data"] != b["train_data"]  # a fresh subset per run
    assert c["train_data"] == a["train_data"]  # ... unless the split seed is pinned
    full, _ = pipeline.datasets(profiles.get("ci"))
    s = StudentConfig(profile="ci", seed=1, train_fraction=0.8).splits
    idx, val = pipeline._split(full, s)
    assert val is None and len(idx) == 160
    assert torch.bincount(full.labels[idx], minlength=10).tolist() == [16] * 10


def test_validation_split_comes_from_the_training_set(tiny):
    full, test = pipeline.datasets(profiles.get(tiny))
    s = StudentConfig(profile=tiny, seed=3, val_fraction=0.25, train_fraction=0.5).splits
    assert (s["val_fraction"], s["train_fraction"], s["split_seed"]) == (0.25, 0.5, 3)
    idx, val = pipeline._split(full, s)
    assert len(val) == 50 and len(idx) == 75  # 25 % held out, half of the other 150 trained on
    assert val.split == "train" and val.fingerprint != test.fingerprint
    val_rows = {tuple(x.flatten().tolist()) for x in val.images[:, :, :2, :2]}
    train_rows = {tuple(x.flatten().tolist()) for x in full.images[idx][:, :, :2, :2]}
    assert not val_rows & train_rows  # disjoint images


def test_student_with_validation_and_subset_trains(tiny):
    with pytest.warns(UserWarning, match="synthetic"):
        run = pipeline.student_run(
            method="KD_IG", profile=tiny, val_fraction=0.25, train_fraction=0.5, progress=False
        )
    m = run.metrics
    assert (m["train_images"], m["val_images"], m["test_images"]) == (75, 50, 100)
    assert 0 <= m["final_val_accuracy"] <= 100 and 0 <= m["best_val_accuracy"] <= 100
    assert run.config["val_fraction"] == 0.25 and run.config["split_seed"] == 0
    assert m["settings"]["val_fraction"] == 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_fraction": 0.0}, "train_fraction=0.0"),
        ({"train_fraction": 1.5}, "train_fraction=1.5"),
        ({"val_fraction": 1.0}, "val_fraction=1.0"),
        ({"val_fraction": "0.1"}, "val_fraction='0.1'"),
        ({"split_seed": 1.5}, "split_seed=1.5"),
        ({"seed": None}, "seed=None"),
    ],
)
def test_bad_split_settings_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        StudentConfig(profile="ci", **kwargs)


def test_a_store_of_other_ig_settings_covers_only_the_students_images(tiny):
    # The fix ablation's black-baseline and step-count arms train on 20 %: their own IG stores
    # cover those images only, while the profile's store (shared by every chapter) stays whole.
    with pytest.warns(UserWarning, match="synthetic"):
        train_ds, _ = pipeline.datasets(profiles.get(tiny))
        half = {"method": "KD_IG", "seed": 0, "train_fraction": 0.5, "split_seed": 0}
        black = pipeline.student_run(profile=tiny, progress=False, ig_baseline="black", **half)
        plain = pipeline.student_run(profile=tiny, progress=False, **half)
        two = pipeline.student_run(profile=tiny, progress=False, ig_n_steps=2, **half)
        same = pipeline.student_run(profile=tiny, progress=False, ig_n_steps=1, **half)
    stores = {
        name: runs.open_run(paths.runs_dir() / "ig_maps" / r.config["ig_run"])
        for name, r in (("black", black), ("plain", plain), ("two", two), ("same", same))
    }
    assert stores["plain"].config["train_data"] == train_ds.fingerprint  # the profile's, whole
    assert stores["same"].path == stores["plain"].path  # the profile's own step count: shared
    for name in ("black", "two"):
        assert stores[name].config["train_data"] == black.config["train_data"]  # the half
        assert (stores[name].path / "maps.npy").is_file() and stores[name].done
    assert black.metrics["train_images"] == len(train_ds) // 2
    # A sweep makes such a store first, as the profile's, before the students that need it.
    from igkd import sweep

    other = {**half, "profile": tiny, "seed": 1, "ig_baseline": "black"}
    with pytest.warns(UserWarning, match="synthetic"):
        (key, ig), *more = sweep.prerequisites(sweep.validate([other])).items()
    assert ig and not more and key[-1] == (("split_seed", 0), ("train_fraction", 0.5))
    assert sweep.prerequisites(sweep.validate([{**other, "ig_baseline": "normalized-zero"}]))
    assert (
        list(sweep.prerequisites(sweep.validate([{**half, "profile": tiny, "seed": 1}])))[0][-1]
        == ()
    )
