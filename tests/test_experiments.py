"""The experiment notebooks' glue: run grids, accuracies, the teacher's accuracy, tables beside the
paper's. Pure functions of run metrics, so these tests need no training."""

from __future__ import annotations

import math

import matplotlib
import pytest

from igkd import experiments, paper, pipeline, profiles, runs
from igkd.config import StudentConfig
from igkd.errors import ConfigError

matplotlib.use("Agg")


def _run(method: str, acc: float, seed: int = 0, compression: str = "4.1", teacher=None) -> dict:
    return {
        "method": method,
        "seed": seed,
        "compression": compression,
        "final_test_accuracy": acc,
        "teacher_test_accuracy": teacher,
    }


def test_runs_for_prefers_the_argument_then_the_profile():
    assert experiments.runs_for("ablation_runs", "ci", 5) == 5
    assert experiments.runs_for("ablation_runs", "ci", None) == 2
    assert experiments.runs_for("monte_carlo_runs", "paper", None) == 60
    with pytest.raises(ConfigError, match="runs=0"):
        experiments.runs_for("ablation_runs", "ci", 0)


def test_setting_prefers_the_argument_then_the_profile_then_the_paper():
    assert experiments.setting("ablation_methods", "quick", ["KD"], paper.METHODS) == ["KD"]
    assert experiments.setting("ablation_methods", "quick", None, paper.METHODS) == [
        "student",
        "KD",
        "IG",
        "KD_IG",
    ]
    assert experiments.setting("ablation_methods", "paper", None, paper.METHODS) == paper.METHODS
    assert experiments.setting("tuning_epochs", "paper", None, None) is None


def test_quick_experiments_train_one_epoch_and_share_runs_between_notebooks():
    # 1-epoch experiment runs keep the quick book to an afternoon; ci and paper use their recipes
    assert experiments.epochs_for("quick", None) == (1, "1 epoch(s) per run")
    assert experiments.epochs_for("quick", 3) == (3, "3 epoch(s) per run")
    assert experiments.epochs_for("ci", None) == (None, "the student recipe's epochs")
    assert experiments.epochs_for("paper", None)[0] is None
    with pytest.raises(ConfigError, match="epochs=0"):
        experiments.epochs_for("quick", 0)
    # the sweep's 4.1x points (notebook 06) are the ablation's runs (notebook 04): same settings
    share = experiments.subset(experiments.data_share("quick", None))
    ablation = experiments.grid(
        ["KD_IG"],
        [0],
        compression=4.1,
        profile="quick",
        teacher_outputs="online",
        epochs=1,
        **share,
    )[0]
    sweep_point = {
        **experiments.grid(["KD_IG"], [0], profile="quick", epochs=1, **share)[0],
        "compression": "4.1",
    }
    a = StudentConfig.of(ablation).settings()
    b = StudentConfig.of(sweep_point).settings()
    assert a == b and a["recipe"]["epochs"] == 1
    assert a["train_fraction"] == 0.2 and a["split_seed"] == 0  # one subset for every seed


def test_data_share_narrows_only_the_quick_experiments():
    assert experiments.data_share("quick", None) == 0.2
    assert experiments.data_share("quick", 1) == 1.0
    assert experiments.data_share("ci", None) == experiments.data_share("paper", None) == 1.0
    # all of the training set adds no settings, so runs made before data_share keep their hashes
    assert experiments.subset(1.0) == {}
    assert experiments.subset(0.2, split_seed=3) == {"train_fraction": 0.2, "split_seed": 3}
    for bad in (0, 1.5, "0.2", True):
        with pytest.raises(ConfigError, match="data_share="):
            experiments.data_share("quick", bad)


def test_grid_is_seed_major_and_rejects_no_methods():
    g = experiments.grid(["student", "KD"], range(2), compression=4.1)
    assert [(c["seed"], c["method"]) for c in g] == [
        (0, "student"),
        (0, "KD"),
        (1, "student"),
        (1, "KD"),
    ]
    assert all(c["compression"] == 4.1 for c in g)
    with pytest.raises(ConfigError, match="methods is empty"):
        experiments.grid([], range(2))


def test_teacher_accuracy_skips_runs_without_a_teacher():
    # a plain student never trains a teacher: its runs record None, and one came first in CI
    assert (
        experiments.teacher_accuracy([_run("student", 70.0), _run("KD", 71.0, teacher=82.4)])
        == 82.4
    )
    assert experiments.teacher_accuracy([_run("student", 70.0)]) is None


def test_accuracies_and_beside_paper():
    results = [
        _run("student", 70.0, 0),
        _run("KD", 72.0, 0),
        _run("student", 72.0, 1),
        _run("KD", 74.0, 1),
    ]
    ours = experiments.accuracies(results)
    assert ours == {"student": [70.0, 72.0], "KD": [72.0, 74.0]}
    table = experiments.beside_paper(ours, paper.ABLATION_RUNS)
    assert table.loc["student", ("ours", "mean")] == 71.0
    assert table.loc["student", ("ours", "n")] == 2
    assert table.loc["KD", ("paper", "n")] == len(paper.ABLATION_RUNS["KD"])
    assert "IG" not in table.index  # only the methods we ran


def test_sweep_table_puts_the_papers_number_beside_ours():
    results = [_run("student", 70.0 + s, s) for s in range(2)] + [_run("student", 40.0, 0, "140")]
    t = experiments.sweep_table(results)
    assert list(t["compression"]) == ["4.1", "140"]  # sorted by ratio
    row = t.iloc[0]
    assert row["n"] == 2 and row["mean"] == 70.5 and row["paper"] == paper.SWEEP["4.1"]["student"]
    assert row["ci_low"] < 70.5 < row["ci_high"]  # two runs: a confidence interval
    assert t.iloc[1]["n"] == 1 and math.isnan(t.iloc[1]["ci_low"])  # one run: none
    ax = experiments.plot_sweep(t, teacher=80.0)
    assert ax.get_xscale() == "log"


def test_finished_students_skips_foreign_runs(tmp_path, monkeypatch):
    # A run cache shared with other tools (or tests) can hold student runs whose metrics lack a
    # method; notebook 07 listed every run and failed on one in CI.
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    good = {"method": "KD", "compression": "4.1", "final_test_accuracy": 70.0}
    runs.get_or_run("student", {"layers_removed": 5, "n": 1}, lambda r: {"epochs": 1})
    runs.get_or_run(
        "student",
        {"layers_removed": 5, "n": 2},
        lambda r: {**good, "environment": {"profile": "ci"}},
    )
    runs.get_or_run(
        "student",
        {"layers_removed": 5, "n": 3},
        lambda r: {**good, "environment": {"profile": "quick"}},
    )
    assert [r.config["n"] for r, _ in pipeline.finished_students(with_model=False)] == [2, 3]
    ci = pipeline.finished_students("ci", with_model=False)
    assert [m["environment"]["profile"] for _, m in ci] == ["ci"]
    # runs without model.pt (a metrics-only import) cannot serve notebooks that load models
    assert pipeline.finished_students() == []


def test_students_without_their_model_are_named_not_silently_dropped(tmp_path, monkeypatch):
    # Chapters 07 and 10 evaluate models; students imported as metrics only cannot be, and the
    # chapter says which rather than showing fewer students without a word.
    from igkd import profile_runs

    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    env = {"environment": {"profile": "ci"}, "compression": "4.1", "final_test_accuracy": 70.0}
    made = [
        runs.get_or_run(
            "student", {"layers_removed": 5, "seed": s}, lambda r, m=m: {**env, "method": m}
        )
        for s, m in ((0, "KD"), (1, "KD_IG"))
    ]
    note = profile_runs.without_model_note("ci", "all")
    assert note.startswith("2 of the run cache's all students") and "KD s0, KD_IG s1" in note
    assert profile_runs.without_model_note("ci", "none") is None
    for run in made:
        (run.path / "model.pt").write_bytes(b"")  # finished_students only asks that it is there
    assert profile_runs.without_model_note("ci", "all") is None
    assert len(profile_runs.chosen_students("ci", "all")) == 2


def test_profiles_refuse_misspelled_keys():
    import dataclasses

    from igkd import robustness_eval, train

    assert profiles.RECIPE_FIELDS == tuple(f.name for f in dataclasses.fields(train.Recipe))
    rob = {k for k in profiles.EXPERIMENT_KEYS if k.startswith("robustness_")}
    assert rob == {f"robustness_{k}" for k in robustness_eval.DEFAULTS["default"]}
    quick = profiles.get("quick")
    with pytest.raises(ConfigError, match=r"unknown experiments key\(s\) \['ablation_run'\]"):
        quick.replace(experiments={**quick.experiments, "ablation_run": 5})
    with pytest.raises(ConfigError, match=r"unknown student_recipe key\(s\) \['epoch'\]"):
        quick.replace(student_recipe={**quick.student_recipe, "epoch": 5})
    with pytest.raises(ConfigError, match="unknown experiment setting 'sweep_run'"):
        experiments.setting("sweep_run", "quick", None, 1)


# --- the paper versions' settings, as presets (notebooks 05, 06) ---------------------------------


def test_named_settings_map_to_overrides_of_the_parts_a_method_uses():
    assert experiments.named_settings("v1") == {
        "alpha": 0.1,
        "temperature": 3.0,
        "overlay_prob": 0.25,
    }
    # v2 is the presets themselves: no overrides, so the existing runs keep their cache hashes
    assert all(experiments.settings_overrides("v2", m) == {} for m in paper.METHODS)
    assert experiments.settings_overrides("v1", "student") == {}
    assert experiments.settings_overrides("v1", "KD") == {"alpha": 0.1, "temperature": 3.0}
    assert experiments.settings_overrides("v1", "IG") == {"overlay_prob": 0.25}
    assert experiments.settings_overrides("pre-v1-p0.5", "KD_IG") == {
        "alpha": 0.1,
        "temperature": 3.0,
        "overlay_prob": 0.5,
    }
    configs = experiments.with_settings(experiments.grid(["student", "KD_IG"], [0]), "pre-v1-p0.25")
    assert configs[0] == {"method": "student", "seed": 0}
    weights = StudentConfig.of(configs[1], profile="ci").weights
    assert (weights.alpha, weights.temperature, weights.overlay_prob) == (0.1, 3.0, 0.25)
    assert weights.gamma == 0  # KD_IG has no AT part, whatever the settings
    assert "alpha 0.1, T 3, p 0.25" in experiments.settings_text("v1")


def test_named_settings_tag_their_runs_and_pick_the_papers_table():
    v2 = experiments.settings_purpose("sweep", "v2", "ci", runs=1)
    assert v2 == {"experiment": "sweep", "profile": "ci", "runs": 1}  # as before: tags stay valid
    v1 = experiments.settings_purpose("sweep", "v1", "ci", runs=1)
    assert v1["settings"] == "v1" and v1["experiment"] == "sweep"
    assert experiments.sweep_reference("v2") is paper.SWEEP
    assert experiments.sweep_reference("v1") is paper.SWEEP_V1
    assert experiments.sweep_reference("pre-v1-p0.5") == {}
    table = experiments.sweep_table([_run("KD", 80.0)], reference=paper.SWEEP_V1)
    assert table.loc[0, "paper"] == paper.SWEEP_V1["4.1"]["KD"]


@pytest.mark.parametrize("bad", ["v3", "", None, "V2"])
def test_a_bad_settings_name_lists_the_names(bad):
    with pytest.raises(
        ConfigError, match=r"settings=.*; use one of v2, v1, pre-v1-p0.5, pre-v1-p0.25"
    ):
        experiments.with_settings([{"method": "KD", "seed": 0}], bad)
    with pytest.raises(ConfigError, match="use one of v2"):
        experiments.settings_overrides(bad, "KD")
