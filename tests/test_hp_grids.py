"""The paper's hyperparameter grids (`igkd.hp_grids`) and chapter 09's paragraph about them
(`igkd.conclusions.hp_grids`). No training: the results are made up."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from igkd import hp_grid_figures, hp_grids, profiles  # noqa: E402
from igkd.conclusions.hp_grids import hyperparameter_grids  # noqa: E402
from igkd.errors import ConfigError  # noqa: E402

# --- the grids -------------------------------------------------------------------------------------


def test_the_full_grids_are_the_papers():
    kd = hp_grids.get("kd")
    assert kd.method == "KD" and kd.size == 45  # paper.md 6: 45 runs
    assert kd.axes["alpha"] == (0.0005, 0.005, 0.01, 0.025, 0.05, 0.075, 0.09, 0.1, 0.25)
    assert kd.axes["temperature"] == (1.5, 2, 2.5, 3, 4)
    assert kd.chosen == {"alpha": 0.01, "temperature": 2.5}
    at = hp_grids.get("at")
    assert set(at.axes["gamma"]) == {0.1, 0.25, 0.5, 0.75, 0.9, 0.8} and at.chosen == {"gamma": 0.8}
    overlay = hp_grids.get("overlay")
    assert {0.1, 0.25, 0.5, 0.75} <= set(overlay.axes["overlay_prob"]) and overlay.note
    for grid in hp_grids.GRIDS.values():
        assert len(grid.points()) == grid.size
        for values in grid.axes.values():
            assert list(values) == sorted(values)
        for k, v in grid.chosen.items():
            assert v in grid.axes[k]  # every grid holds the paper's choice


@pytest.mark.parametrize("profile", ["ci", "quick", "paper"])
def test_each_profile_runs_a_subset_holding_the_papers_choice(profile):
    for name, full in hp_grids.GRIDS.items():
        grid = hp_grids.for_profile(name, profile)
        assert grid.method == full.method
        for k, values in grid.axes.items():
            assert set(values) <= set(full.axes[k]) and grid.chosen[k] in values
        if profile == "paper":
            assert grid == full
    sizes = {n: hp_grids.for_profile(n, profile).size for n in hp_grids.GRIDS}
    if profile == "ci":
        assert 2 <= sum(sizes.values()) <= 4 and sizes["kd"] >= 2  # seconds, but a choice to make
    if profile == "quick":
        assert 1 < sizes["kd"] < 45


def test_coarse_keeps_the_chosen_value_and_spreads_the_rest():
    alphas = hp_grids.get("kd").axes["alpha"]
    assert hp_grids.coarse(alphas, 1, 0.01) == (0.01,)
    assert hp_grids.coarse(alphas, 2, 0.01) == (0.01, 0.25)  # the farthest from the choice
    assert hp_grids.coarse(alphas, 3, 0.01) == (0.0005, 0.01, 0.25)  # both ends
    assert hp_grids.coarse(alphas, 4, 0.01) == (0.0005, 0.01, 0.075, 0.25)
    assert hp_grids.coarse(alphas, 99, 0.01) == alphas == hp_grids.coarse(alphas, None, 0.01)
    assert hp_grids.get("kd").subset({"alpha": 2}).axes["temperature"] == (1.5, 2, 2.5, 3, 4)


def test_bad_names_and_sizes_are_one_line_config_errors():
    for call, match in (
        (
            lambda: hp_grids.get("lr"),
            "unknown hyperparameter grid 'lr'; use one of kd, overlay, at",
        ),
        (lambda: hp_grids.for_profile("gamma", "ci"), "unknown hyperparameter grid"),
        (lambda: hp_grids.get("kd").subset({"gamma": 2}), "has no axis"),
        (lambda: hp_grids.get("kd").subset(0), "grid size 0"),
        (lambda: hp_grids.for_profile("at", "ci", sizes=-1), "grid size -1"),
        (lambda: hp_grids.configs(hp_grids.get("at"), val_fraction=0.0), "val_fraction=0.0"),
    ):
        with pytest.raises(ConfigError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_the_profiles_keys_are_known():
    for name in hp_grids.GRIDS:
        assert f"hp_grid_{name}" in profiles.EXPERIMENT_KEYS


def test_every_point_is_a_validation_scored_run_through_the_cache(monkeypatch):
    from igkd.config import StudentConfig

    kd, at = hp_grids.for_profile("kd", "quick"), hp_grids.for_profile("at", "quick")
    seen = {}

    def run_many(configs, client=None, **kw):  # one call for every grid: one Dask cluster
        seen.setdefault("calls", []).append(configs)
        return [
            {"final_val_accuracy": 50.0 + i, "final_test_accuracy": 60.0 - i, "val_images": 1000}
            for i in range(len(configs))
        ]

    monkeypatch.setattr("igkd.sweep.run_many", run_many)
    tables = hp_grids.run([kd, at], profile="ci", epochs=1, train_fraction=0.2)
    (configs,) = seen["calls"]
    assert len(configs) == kd.size + at.size and list(tables) == ["kd", "at"]
    assert tables["at"][hp_grids.VAL].tolist() == [50.0 + kd.size + i for i in range(at.size)]
    for c, (_, row) in zip(configs, tables["kd"].iterrows(), strict=False):
        assert c["purpose"]["experiment"] == "tuning" and c["purpose"]["grid"] == "kd"
        s = StudentConfig.of({k: v for k, v in c.items() if k != "purpose"})
        assert s.method == "KD" and s.val_fraction == 0.1 and s.seed == 0 and s.epochs == 1
        assert s.train_fraction == 0.2 and s.splits["split_seed"] == 0  # one split for all
        assert (s.alpha, s.temperature) == (row["alpha"], row["temperature"])
    assert configs[-1]["purpose"]["grid"] == "at" and configs[-1]["method"] == "KD_IG_AT"
    with pytest.raises(ConfigError, match="non-empty list"):
        hp_grids.run(kd)


# --- picking the best point ------------------------------------------------------------------------


def _kd_frame(val, test, n_val=1000):
    points = hp_grids.get("kd").subset({"alpha": 2, "temperature": 2}).points()
    return pd.DataFrame(
        [
            {**p, hp_grids.VAL: v, hp_grids.TEST: t, "val_images": n_val}
            for p, v, t in zip(points, val, test, strict=True)
        ]
    )


def test_best_on_validation_and_best_on_test_are_picked_apart():
    # points: (0.01, 2.5), (0.01, 4), (0.25, 2.5), (0.25, 4)
    frame = _kd_frame(val=[85, 80, 82, 81], test=[80, 79, 83, 81])
    best = hp_grids.best_points(frame)
    assert (best["validation"]["alpha"], best["validation"]["temperature"]) == (0.01, 2.5)
    assert (best["test"]["alpha"], best["test"]["temperature"]) == (0.25, 2.5)
    ties = hp_grids.best_points(_kd_frame(val=[80, 80, 80, 80], test=[70, 71, 71, 70]))
    assert ties["validation"].name == 0 and ties["test"].name == 1  # the first in grid order
    missing = _kd_frame(val=[None, 85, 82, 81], test=[99, 80, 83, 81])
    assert hp_grids.best_points(missing)["test"].name == 2  # a point without a score is skipped
    assert hp_grids.best_points(_kd_frame(val=[None] * 4, test=[None] * 4)) == {}

    table = hp_grids.best_table({"kd": frame})
    assert table["pick"].tolist() == [
        "best on validation",
        "best on test",
        "paper's choice (on test)",
    ]
    assert table["test (%)"].tolist() == [80, 83, 80]  # the paper's point ran (alpha 0.01, T 2.5)
    assert table["paper's test (%)"].iloc[-1] == 92.29


def test_the_figures_draw_the_full_grid_and_the_one_axis_grids():
    frame = _kd_frame(val=[85, 80, 82, 81], test=[80, 79, 83, 81])
    ax = hp_grid_figures.plot_kd(frame)
    assert len(ax.get_yticks()) == 9 and len(ax.get_xticks()) == 5
    grid = hp_grids.get("overlay")
    line = pd.DataFrame(
        {"overlay_prob": [0.1, 0.75], hp_grids.VAL: [80, 70], hp_grids.TEST: [81, 72]}
    )
    assert hp_grid_figures.plot_line(line, grid).get_xlabel() == "p (KD_IG)"


# --- the paragraph ---------------------------------------------------------------------------------


def test_the_grid_paragraph_follows_the_numbers():
    def text(val, test, n_val=1000):
        return hyperparameter_grids({"kd": _kd_frame(val, test, n_val)}, profile="p", data="d")

    apart = text([85, 80, 82, 81], [80, 79, 83, 81])
    assert "Best on validation: alpha 0.01, T 2.5 (85 % validation, 80 % test)" in apart
    assert "picks alpha 0.25, T 2.5 instead, whose test accuracy is 3 pp above" in apart
    assert "The validation choice **is** the paper's" in apart
    assert "mean 91.89 %" in apart and "sd 0.453 pp" in apart  # the paper's grid beside ours

    same = text([80, 81, 82, 86], [79, 80, 83, 84])
    assert "picks the same point" in same and "**is not** the paper's" in same
    assert "-6 pp from the best" in same
    assert apart != same

    # The spread against the validation set's sampling error decides what is said.
    assert "beyond it" in text([85, 80, 82, 81], [80, 79, 83, 81], n_val=10_000)
    assert "within it" in text([80, 80.5, 80.2, 80.1], [79, 80, 83, 81], n_val=100)


def test_the_grid_paragraph_says_when_there_is_nothing_to_choose():
    one = pd.DataFrame([{"gamma": 0.8, hp_grids.VAL: 12.0, hp_grids.TEST: 11.0, "val_images": 50}])
    text = hyperparameter_grids({"at": one}, profile="ci", data="synthetic")
    assert "One point only (gamma 0.8)" in text and "no choice to make" in text
    assert "chance" in text  # 12 % on 10 classes
    assert "paper's 45" not in text  # no KD grid, no KD sentence
    none = pd.DataFrame([{"gamma": 0.8, hp_grids.VAL: None, hp_grids.TEST: None}])
    assert "no point finished" in hyperparameter_grids({"at": none}, profile="ci", data="x")
    assert "nothing to report" in hyperparameter_grids({}, profile="ci", data="x")


def test_the_kd_summary_puts_the_papers_grid_beside_ours():
    table = hp_grids.kd_summary(_kd_frame(val=[85, 80, 82, 81], test=[80, 79, 83, 81]))
    assert table.loc["ours, validation", "max"] == 85 and table.loc["ours, test", "n"] == 4
    assert table.loc["ours, validation", "at"] == "alpha 0.01, T 2.5"
    assert table.loc["ours, test", "at"] == "alpha 0.25, T 2.5"
    paper = table.loc["paper, test"]
    assert (paper["n"], paper["mean"], paper["sd"], paper["max"]) == (45, 91.89, 0.453, 92.29)


def test_the_grid_paragraph_says_when_points_tie():
    def text(val, test):
        return hyperparameter_grids({"kd": _kd_frame(val, test)}, profile="ci", data="d")

    flat = text([10, 10, 10, 10], [10, 11, 10, 10])
    assert "All of them score 10 % on validation (test 10 to 11 %)" in flat
    assert "**not settled**" in flat and "Best on validation" not in flat
    assert "(test 10 %)" in text([10, 10, 10, 10], [10, 10, 10, 10])
    two = text([12, 14, 14, 11], [10, 11, 10, 10])
    assert "Best on validation: alpha 0.01, T 4 (14 % validation, 11 % test; tied with 1" in two
    assert "picks the same point" in two
    assert flat != two


def test_the_chosen_point_is_the_presets_and_bounds_the_optuna_space():
    from igkd import losses, tune

    preset = losses.PRESETS["KD_IG_AT"]
    assert hp_grids.CHOSEN == {k: getattr(preset, k) for k in hp_grids.CHOSEN}
    assert tune.PAPER_CHOICE == hp_grids.CHOSEN
    for grid in hp_grids.GRIDS.values():
        for k, values in grid.axes.items():
            assert tune.SPACE[k][:2] == (min(values), max(values))
