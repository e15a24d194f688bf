"""Which runs of the cache the summary page counts, for a profile, and tagging the runs made before
runs recorded their purpose.

Only runs made in the profile and evaluated on its test set (same data fingerprint) count; the
teacher: runs with the profile's teacher recipe; students: by the purpose each run records
(`Run.purposes`, tagged when a notebook submits or reuses it): the ablation rows count runs tagged
"ablation", the Monte Carlo rows "monte-carlo", the sweep rows "sweep". Runs made before runs
recorded their purpose are counted only once `tag_untagged` (`igkd runs migrate`) has tagged them
by the rules the page used to apply.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from igkd import losses, profiles, runs, train
from igkd.errors import CheckpointError, ConfigError


def _plain(obj: object) -> object:
    """Dataclass dicts as they read back from JSON (tuples become lists), for comparison."""
    return json.loads(json.dumps(obj))


@dataclass
class ProfileRuns:
    """The finished runs of one profile on its test data, as (config, metrics) pairs."""

    profile: str
    data: str  # the test data's name, e.g. "CIFAR-10 (JPEG q75 copy)"
    train_images: int  # the profile's whole training set
    share: float  # the share of it the experiments train on (experiment_data_share)
    epochs: int  # epochs of the experiment runs
    teachers: list[dict]  # metrics of teacher runs with the profile's recipe
    # metrics (+ "run": folder name, "experiments": the experiments of this profile it serves)
    students: list[dict]
    other_students: int  # student runs of the profile that serve none of the page's experiments
    untagged: int = 0  # student runs of the profile that record no purpose (made before tags)
    run_paths: list[Path] = dataclasses.field(default_factory=list)  # the runs counted
    # The ablation's settings (experiments.ablation_settings, epochs resolved): the paper's 4.1x at
    # `epochs` on `share`, or the profile's ablation_regime's (quick: the regime chapter 11 chose).
    # `students_of(found, method, found.ablation_size, "ablation")` are its runs.
    ablation_size: str = "4.1"
    ablation_epochs: int = 0
    ablation_share: float = 1.0


COUNTED = ("ablation", "monte-carlo", "sweep")  # the experiments the summary page has rows for


def collect(profile: str | None = None, data_root: str | Path | None = None) -> ProfileRuns:
    """Read the run cache for `profile`: see the module docstring for which runs count."""
    from igkd import experiments, pipeline  # pipeline imports torch-heavy modules

    prof = profiles.get(profile)
    train_ds, test_ds = pipeline.datasets(prof, data_root)
    teacher_recipe = _plain(dataclasses.asdict(train.Recipe(**prof.teacher_recipe)))
    epochs = experiments.trained_epochs(prof.name, None)
    share = experiments.data_share(prof.name, None)
    # The ablation's runs are those of its current settings: a run tagged "ablation" under an
    # earlier protocol (quick's 1-epoch 4.1x arms, before chapter 11 moved the ablation) serves it
    # no longer, even at the same size.
    ablation_size, ablation_epochs, ablation_share = experiments.ablation_settings(prof.name)
    ablation_epochs = experiments.trained_epochs(prof.name, ablation_epochs)

    def current_ablation(m: dict) -> bool:
        return (
            m["compression"] == ablation_size
            and m.get("epochs", ablation_epochs) == ablation_epochs
            and abs(m["train_images"] / len(train_ds) - ablation_share) <= 1e-3
        )

    def mine(run: runs.Run) -> dict | None:
        m = run.metrics
        same = m.get("environment", {}).get("profile") == prof.name
        return m if same and run.config.get("test_data") == test_ds.fingerprint else None

    teachers, run_paths = [], []
    for run in runs.find_runs("teacher"):
        if (m := mine(run)) is not None and run.config.get("recipe") == teacher_recipe:
            teachers.append(m)
            run_paths.append(run.path)
    students, other, untagged = [], 0, 0
    for run in runs.find_runs("student"):
        if (m := mine(run)) is None:
            continue
        tags = run.purposes
        # Runs made under an earlier paper version's settings (chapters 05/06 `settings`) serve
        # that chapter's comparison, not the page's rows, which hold the v2 numbers.
        serves = {
            p.get("experiment")
            for p in tags
            if p.get("profile") == prof.name and p.get("settings", "v2") == "v2"
        }
        if "ablation" in serves and not current_ablation(m):
            serves.discard("ablation")
        if not tags:
            untagged += 1
        elif serves & set(COUNTED):
            students.append({**m, "run": run.path.name, "experiments": sorted(serves)})
            run_paths.append(run.path)
        else:
            other += 1
    return ProfileRuns(
        prof.name,
        test_ds.source,
        len(train_ds),
        share,
        epochs,
        teachers,
        students,
        other,
        untagged,
        run_paths,
        ablation_size,
        ablation_epochs,
        ablation_share,
    )


def tag_untagged(profile: str | None = None, data_root: str | Path | None = None) -> dict:
    """Tag the student runs that record no purpose (made before runs recorded one) by the rules the
    summary page used to apply, once: a run of the profile's experiment recipe, a paper preset and
    the default fixes serves the sweep, and at 4.1x the ablation too, when it trained on the
    experiments' whole share of the training set; the Monte Carlo when on 78-82 % of that share.
    Other untagged runs stay untagged. Returns {experiment: runs tagged} (`igkd runs migrate`)."""
    from igkd import config, experiments, pipeline

    prof = profiles.get(profile)
    train_ds, test_ds = pipeline.datasets(prof, data_root)
    recipe = train.Recipe(**prof.student_recipe)
    epochs = experiments.trained_epochs(prof.name, None)
    wanted = _plain(dataclasses.asdict(dataclasses.replace(recipe, epochs=epochs)))
    share = experiments.data_share(prof.name, None)
    done: dict[str, int] = {}
    for run in runs.find_runs("student"):
        try:
            m = run.metrics
        except CheckpointError:  # unreadable metrics: the run is simply not tagged
            continue
        same = m.get("environment", {}).get("profile") == prof.name
        if run.purposes or not same or run.config.get("test_data") != test_ds.fingerprint:
            continue
        s, preset = m.get("settings") or {}, losses.PRESETS.get(m.get("method"))
        default = (
            preset is not None
            and s.get("weights") == _plain(dataclasses.asdict(preset))
            and s.get("recipe") == wanted
            and s.get("teacher_outputs") in (None, "online")
            and s.get("overlay_order") in (None, "aligned")
        )
        if not default:
            continue
        used = m["train_images"] / len(train_ds) / share
        names = []
        if abs(used - 1) <= 1e-3:
            names = ["ablation", "sweep"] if m["compression"] == "4.1" else ["sweep"]
        elif 0.78 - 1e-3 <= used <= 0.82 + 1e-3:
            names = ["monte-carlo"]
        for name in names:
            run.add_purpose(config.purpose(name, prof.name, migrated=True))
            done[name] = done.get(name, 0) + 1
    return done


def students_of(found: ProfileRuns, method: str | None, compression: str, experiment: str) -> list:
    """Metrics of the counted students of `method` (None: any) at `compression` that serve
    `experiment` (ablation, monte-carlo or sweep) in this profile."""
    return [
        m
        for m in found.students
        if method in (None, m["method"])
        and m["compression"] == compression
        and experiment in m["experiments"]
    ]


RUN_STUDENTS = ("ablation", "all", "none")  # which run-cache students chapters 07 and 10 evaluate


def chosen_students(
    profile: str | None, which: str = "ablation", with_model: bool = True
) -> list[tuple[runs.Run, dict]]:
    """(run, metrics) of the profile's finished students (with their model) that a chapter
    evaluates: "ablation" (those the summary counts as the profile's ablation, at its size,
    epochs and share), "all" (every finished student of the profile) or "none". Chapter 07 and
    10 read these models back, so a lean archive of the book carries only them. `with_model=False`
    also returns those imported without their model (from a metrics-only or lean archive)."""
    from igkd import pipeline  # torch-heavy

    if which not in RUN_STUDENTS:
        raise ConfigError(f"run_students={which!r}; use one of {', '.join(RUN_STUDENTS)}")
    if which == "none":
        return []
    finished = pipeline.finished_students(profile, with_model=with_model)
    if which == "ablation":
        found = collect(profile)
        counted = {m["run"] for m in students_of(found, None, found.ablation_size, "ablation")}
        finished = [(r, m) for r, m in finished if r.path.name in counted]
    return finished


def without_model_note(profile: str | None, which: str = "ablation") -> str | None:
    """One line naming the chosen students (`chosen_students`) that are in the run cache as
    metrics only, so a chapter cannot evaluate them; None when there are none."""
    missing = [
        (r, m)
        for r, m in chosen_students(profile, which, with_model=False)
        if not (r.path / "model.pt").is_file()  # finished_students' test of a model
    ]
    if not missing:
        return None
    names = ", ".join(f"{m['method']} s{r.config.get('seed')}" for r, m in missing)
    return (
        f"{len(missing)} of the run cache's {which} students have metrics but no model (imported "
        f"from a metrics-only or lean archive), so they are not evaluated here: {names}. Train "
        "them again (delete their runs) to include them."
    )
