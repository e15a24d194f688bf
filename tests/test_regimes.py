"""The regime study (notebook 11): scores, the power table and its generated conclusion, on
hand-made run entries (no training)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from igkd import experiments, profiles, regimes, stats
from igkd.errors import ConfigError
from igkd.profiles import Regime

SMALL = Regime("small", "4.1", 0.05, 3)
ONE = Regime("one", "4.1", 0.2, 1)


def _entry(tmp_path, regime: Regime, method: str, seed: int, accs: list[float]) -> dict:
    """A fake `sweep.run_many` entry with a history.csv of per-epoch test accuracies."""
    folder = tmp_path / f"{regime.name}-{method}-{seed}"
    folder.mkdir()
    pd.DataFrame(
        {"epoch": range(1, len(accs) + 1), "test_accuracy": accs, "seconds": [10.0] * len(accs)}
    ).to_csv(folder / "history.csv", index=False)
    return {
        "method": method,
        "run_path": str(folder),
        "epochs": len(accs),
        "train_images": 1000,
        "train_seconds": 36.0 * len(accs),
        "final_test_accuracy": accs[-1],
        "environment": {"threads": 1},
        "config": {"seed": seed, "profile": "quick", "method": method, **regime.settings()},
    }


def _study(tmp_path, gap: float, noise: list[float]) -> list[dict]:
    out = []
    for seed, n in enumerate(noise):
        base = 50 + n
        out.append(_entry(tmp_path, SMALL, "student", seed, [base - 5, base - 1, base]))
        out.append(
            _entry(
                tmp_path, SMALL, "KD_IG", seed, [base - 4, base + gap - 1, base + gap + 0.2 * seed]
            )
        )
    return out


def test_score_is_the_mean_of_the_last_epochs():
    h = pd.DataFrame({"test_accuracy": [10.0, 20.0, 30.0]})
    assert regimes.score(h) == 30.0
    assert regimes.score(h, last=2) == 25.0
    with pytest.raises(ConfigError, match="last=0"):
        regimes.score(h, last=0)


def test_power_table_pairs_seeds_and_counts_what_is_needed(tmp_path):
    entries = _study(tmp_path, gap=2.0, noise=[0.0, 1.0, -1.0])
    table = regimes.table(entries, [SMALL, ONE], budget_hours=1.0)
    assert list(table.index) == ["small"]  # a regime without runs has no row
    row = table.loc["small"]
    assert row["difference (pp)"] == pytest.approx(2.2)
    assert row["seeds"] == 3
    assert row["CPU hours per run"] == pytest.approx(108 / 3600)
    assert row["cost counts"] == "training only (older runs)"
    # 1 h over 4 methods at 0.03 h per run: 8 seeds
    assert row["ablation seeds in budget"] == 8
    assert "paired KD_IG - student" in row["sd_source"]


def test_a_runs_cost_counts_its_scoring_when_recorded(tmp_path):
    """Per-epoch scoring is part of what a regime costs; runs that recorded it set the cost."""
    entries = _study(tmp_path, gap=2.0, noise=[0.0, 1.0, -1.0])
    for e in entries[:2]:
        e["eval_seconds"] = 72.0  # 108 s of training + 72 s of scoring
    row = regimes.table(entries, [SMALL], budget_hours=1.0).loc["small"]
    assert row["CPU hours per run"] == pytest.approx(180 / 3600)
    assert row["cost counts"] == "training and scoring"
    assert row["ablation seeds in budget"] == 5  # 1 h / (4 x 0.05 h)


def test_without_treatment_runs_the_sd_comes_from_the_student(tmp_path):
    entries = [
        _entry(tmp_path, SMALL, "student", s, [40.0, 50.0 + d]) for s, d in enumerate([0, 2, 4])
    ]
    row = regimes.table(entries, [SMALL]).loc["small"]
    assert row["difference sd (pp)"] == pytest.approx(math.sqrt(2) * 2.0)
    assert math.isnan(row["difference (pp)"])
    assert "no pairs yet" in row["sd_source"]
    assert row["seeds for 1 pp"] == stats.seeds_needed(math.sqrt(2) * 2.0, 1.0)


def test_seeds_needed_grows_as_the_effect_shrinks():
    assert stats.seeds_needed(1.0, 0.5) > stats.seeds_needed(1.0, 1.0) >= 2
    with pytest.raises(ConfigError, match="sd=0"):
        stats.seeds_needed(0, 1.0)


def test_the_paper_row_reproduces_its_paired_test():
    row = regimes.paper_row().loc["paper"]
    assert row["difference (pp)"] == pytest.approx(0.834)
    assert row["p (paired t)"] == pytest.approx(0.000109, rel=0.01)  # paper.md: t 6.522


def test_the_conclusion_follows_the_numbers(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    tight = regimes.table(_study(a, 2.0, [0.0, 0.1, -0.1]), [SMALL], budget_hours=1.0)
    loose = regimes.table(_study(b, 0.0, [0.0, 3.0, -3.0]), [SMALL], budget_hours=1.0)
    text_t = regimes.conclusion(tight, profile="quick", data="d", budget_hours=1.0)
    text_l = regimes.conclusion(loose, profile="quick", data="d", budget_hours=1.0)
    assert text_t != text_l
    assert "+2.2 pp" in text_t and "is reached" in text_t
    assert "not reached" not in text_t
    empty = regimes.conclusion(pd.DataFrame(), profile="quick", data="d", budget_hours=1.0)
    assert "nothing can be said" in empty


def test_regimes_of_the_profiles_are_valid_student_settings():
    from igkd.config import StudentConfig

    for name in ("ci", "quick"):
        for r in regimes.regimes_for(name):
            StudentConfig.of(r.settings(), profile=name, method="student")
    with pytest.raises(ConfigError, match="unknown regime"):
        regimes.regimes_for("quick", ["nope"])
    assert profiles.get("paper").experiments.get("regimes") is None
    with pytest.raises(ConfigError, match="defines no regimes"):
        regimes.regimes_for("paper")


def test_students_at_chance_give_no_variance_and_say_so(tmp_path):
    entries = []
    for seed in range(2):
        entries.append(_entry(tmp_path, SMALL, "student", seed, [10.0, 10.0, 10.0]))
        entries.append(_entry(tmp_path, SMALL, "KD_IG", seed, [10.0, 10.0, 10.0]))
    power = regimes.table(entries, [SMALL])
    assert math.isnan(power.loc["small", "ablation half-width (pp)"])
    text = regimes.conclusion(power, profile="ci", data="d", budget_hours=0.1)
    assert "no regime has a usable variance estimate" in text and "scored the same" in text


def test_the_conclusion_says_whether_the_profile_trains_in_the_chosen_regime(tmp_path):
    entries = _study(tmp_path, 1.0, [0.0, 0.5, -0.5])
    power = regimes.table(entries, [SMALL], budget_hours=1.0)
    allowed = int(power.loc["small", "ablation seeds in budget"])
    kw = dict(profile="quick", data="d", budget_hours=1.0)
    there = regimes.conclusion(power, used=SMALL, ablation_runs=3, **kw)
    elsewhere = regimes.conclusion(power, used=ONE, ablation_runs=3, **kw)
    assert "trains in small, the chosen regime" in there
    assert "trains in one, not in the chosen small" in elsewhere
    assert f"runs 3 seeds per method; the budget allows {allowed} there" in there
    assert "none of these regimes" in regimes.conclusion(power, used=None, ablation_runs=3, **kw)
    # The quick profile's ablation trains in the regime its `ablation_regime` names (the one the
    # study chose), and in_use finds it by size, epochs and data share.
    quick = regimes.regimes_for("quick")
    used = regimes.in_use("quick", quick)
    assert used is not None and used.name == profiles.get("quick").experiments["ablation_regime"]
    assert experiments.ablation_settings("quick") == (
        used.compression,
        used.epochs,
        used.data_share,
    )
    assert regimes.in_use("quick", [r for r in quick if r != used]) is None
    # Without an ablation_regime the ablation trains like the other experiments, at 4.1x.
    ci = regimes.regimes_for("ci")
    assert regimes.in_use("ci", ci).compression == "4.1"


def test_ablation_settings_take_parameters_first_and_refuse_an_unknown_regime(monkeypatch):
    assert experiments.ablation_settings("quick", compression=4.1, epochs=2, share=0.5) == (
        "4.1",
        2,
        0.5,
    )
    assert experiments.ablation_settings("ci") == ("4.1", None, 1.0)
    # None epochs train the student recipe's own; tables and regime matching use the number.
    ci_recipe = profiles.PROFILES["ci"].student_recipe["epochs"]
    assert experiments.trained_epochs("ci", None) == ci_recipe
    assert experiments.trained_epochs("ci", 7) == 7
    bad = profiles.PROFILES["quick"].replace(
        experiments={**profiles.PROFILES["quick"].experiments, "ablation_regime": "nope"}
    )
    monkeypatch.setitem(profiles.PROFILES, "quick", bad)
    with pytest.raises(ConfigError, match="ablation_regime='nope' is none of its regimes"):
        experiments.ablation_settings("quick")


def test_an_ablation_over_budget_at_the_floor_of_three_seeds_says_so(tmp_path):
    entries = _study(tmp_path, 1.0, [0.0, 0.5, -0.5])  # 108 s of training per run
    cheap = regimes.table(entries, [SMALL], budget_hours=1.0)
    dear = regimes.table(entries, [SMALL], budget_hours=0.01)
    assert dear.loc["small", "ablation seeds in budget"] == 3
    assert dear.loc["small", "ablation CPU hours"] == pytest.approx(3 * 4 * 108 / 3600)
    kw = dict(profile="quick", data="d")
    assert "over the budget" in regimes.conclusion(dear, budget_hours=0.01, **kw)
    assert "over the budget" not in regimes.conclusion(cheap, budget_hours=1.0, **kw)
    over = regimes.conclusion(dear, budget_hours=0.01, used=SMALL, ablation_runs=3, **kw)
    assert "even the floor of 3 overruns the budget" in over


def test_a_regime_with_fewer_than_the_studys_seeds_is_not_chosen_yet(tmp_path):
    # "small" has 3 paired seeds; "one" only 2, with a smaller (1-degree-of-freedom) sd.
    entries = _study(tmp_path, 2.0, [0.0, 1.0, -1.0])
    for seed, n in enumerate([0.0, 0.01]):
        entries.append(_entry(tmp_path, ONE, "student", seed, [50 + n]))
        entries.append(_entry(tmp_path, ONE, "KD_IG", seed, [52 + 1.01 * n]))
    power = regimes.table(entries, [SMALL, ONE], budget_hours=1.0)
    assert (
        power.loc["one", "ablation half-width (pp)"]
        < power.loc["small", "ablation half-width (pp)"]
    )
    assert regimes.choose(power) == "one"  # the default bar, 2 seeds
    assert regimes.choose(power, min_seeds=3) == "small"
    text = regimes.conclusion(power, profile="quick", data="d", budget_hours=1.0, min_seeds=3)
    assert "is **small**" in text
    assert "Not comparable yet, with fewer than 3 seeds: one (2 seeds, provisional" in text
    with pytest.raises(ConfigError, match="from 4 seeds or more"):
        regimes.choose(power, min_seeds=4)
