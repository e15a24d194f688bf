"""The paper's own tests redone (igkd.paper_tests) and their paragraphs: the Monte Carlo's
Student t on its published moments (05), the ablation's selected pairs on hand-made runs (04), the
earlier settings (05, 06)."""

from __future__ import annotations

import math

import pytest

from igkd import paper, paper_tests, stats
from igkd.conclusions import paper_tests as text
from igkd.errors import ConfigError

# Hand-made runs, paired by seed: KD_IG clearly above KD and IG, KD_AT and AT not run.
RUNS = {
    "student": [40.0, 41.0, 39.5],
    "KD": [42.0, 43.0, 41.0],
    "KD_IG": [45.0, 46.2, 44.1],
    "IG": [41.0, 42.5, 40.0],
    "KD_IG_AT": [45.1, 45.9, 44.3],
}


def test_monte_carlo_published_gives_the_papers_t():
    table = paper_tests.monte_carlo_published()
    t = table[paper_tests.STUDENT_T]["t"].round(1).to_dict()
    assert t == {"KD": 9.7, "KD_IG": 14.8, "KD_IG_AT": 14.3}
    assert (table[paper_tests.STUDENT_T]["df"] == 118).all()
    assert table[paper_tests.WELCH_MOMENTS]["t"].to_numpy() == pytest.approx(
        table[paper_tests.STUDENT_T]["t"].to_numpy()
    )
    assert table.loc["KD_IG", (paper_tests.PUBLISHED, "diff")] == pytest.approx(91.29 - 90.05)
    with pytest.raises(ConfigError, match="reference='IG'"):
        paper_tests.monte_carlo_published("IG")


def test_monte_carlo_beside_adds_our_welch_and_paired_tests():
    ours = {m: RUNS[m] for m in ("student", "KD_IG")}
    table = paper_tests.monte_carlo_beside(ours)
    welch = stats.compare(RUNS["KD_IG"], RUNS["student"], paired=False)
    paired = stats.compare(RUNS["KD_IG"], RUNS["student"], paired=True)
    assert table.loc["KD_IG", (paper_tests.OURS_WELCH, "t")] == pytest.approx(welch["t"])
    assert table.loc["KD_IG", (paper_tests.OURS_PAIRED, "t")] == pytest.approx(paired["t"])
    assert math.isnan(table.loc["KD", (paper_tests.OURS_WELCH, "t")])  # not run here
    said = text.monte_carlo_published(table, profile="test", data="d")
    assert "t = 9.67 (KD), 14.77 (KD_IG), 14.35 (KD_IG_AT)" in said
    assert "same t (equal n)" in said and "significant after Holm" in said
    reversed_ = paper_tests.monte_carlo_beside({"student": RUNS["KD_IG"], "KD_IG": RUNS["student"]})
    said = text.monte_carlo_published(reversed_, profile="test", data="d")
    assert "not the paper's sign" in said
    unequal = paper_tests.monte_carlo_beside({"student": [1.0, 2.0, 3.0], "KD_IG": [2.0, 3.0]})
    assert math.isnan(unequal.loc["KD_IG", (paper_tests.OURS_PAIRED, "t")])  # cannot pair


def test_ablation_pairs_on_hand_made_runs():
    table = paper_tests.ablation_pairs(RUNS)
    assert list(table.index) == [f"{a} - {b}" for a, b in paper.ABLATION_PAIRED_PAIRS]
    ours = table["ours"]
    kd = stats.compare(RUNS["KD_IG"], RUNS["KD"], paired=True)
    assert ours.loc["KD_IG - KD", "t"] == pytest.approx(kd["t"])
    assert ours.loc["KD_IG - KD", "test"] == "paired t"
    assert ours.loc["KD_AT - AT", "test"] == "not run" and math.isnan(ours.loc["KD_AT - AT", "p"])
    tested = ["KD_IG - KD", "KD_IG - KD_IG_AT", "KD_IG - IG"]
    assert ours.loc[tested, "p_holm"].to_numpy() == pytest.approx(
        stats.holm(ours.loc[tested, "p"].to_numpy())
    )
    recomputed = table["paper's runs, recomputed"]
    assert recomputed.loc["KD_IG - KD", "t"] == pytest.approx(2.07, abs=0.005)
    assert (recomputed["p_holm"] >= recomputed["p"]).all()
    assert table.loc["KD_IG - KD", ("paper, as printed", "p")] == 0.069
    said = text.ablation_pairs(table, profile="test", data="d")
    assert "5 of the 5 selected pairs reproduce the printed p" in said
    assert "3 remain" in said and "KD_IG - IG_AT and KD_AT - AT not tested" in said
    assert "- KD_IG - KD: **+3.1 pp**" in said and "**held**" in said
    worse = {**RUNS, "KD": [46.0, 47.0, 45.5]}
    said = text.ablation_pairs(paper_tests.ablation_pairs(worse), profile="test", data="d")
    assert "- KD_IG - KD: **-1.067 pp**" in said and "**reversed**" in said
    nothing = text.ablation_pairs(paper_tests.ablation_pairs({}), profile="test", data="d")
    assert "None of the pairs could be tested" in nothing
    with pytest.raises(ConfigError, match="'XX' is not one of"):
        paper_tests.ablation_pairs(RUNS, {("KD_IG", "XX"): (0.1, None, 0.5)})


def test_monte_carlo_reference_and_the_settings_paragraphs():
    v2 = paper_tests.monte_carlo_reference("v2", ["student", "KD_IG"])
    assert list(v2.index) == ["student", "KD_IG"] and (v2["n"] == 60).all()
    assert v2.loc["KD_IG", "sd"] == pytest.approx(math.sqrt(0.3054))
    pre = paper_tests.monte_carlo_reference("pre-v1-p0.5", ["student", "KD_IG"])
    assert pre.loc["KD_IG", "mean"] == 90.17 and math.isnan(pre.loc["KD_IG", "n"])
    assert paper_tests.pre_v1_means("v1") == paper.MONTE_CARLO_PRE_V1[0.25]  # the same settings
    assert paper_tests.pre_v1_means("v2") is None
    assert text.monte_carlo_settings("v2", RUNS) == ""
    said = text.monte_carlo_settings("pre-v1-p0.5", RUNS)
    assert "`pre-v1-p0.5` (alpha 0.1, T 3, p 0.5" in said and "+0.12 pp" in said
    said_025 = text.monte_carlo_settings("pre-v1-p0.25", RUNS)
    assert "+0.65 pp" in said_025 and said_025 != said
    results = [
        {"compression": "4.1", "method": m, "final_test_accuracy": a}
        for m, a in (("student", 40.0), ("KD_IG", 39.0))
    ]
    assert text.sweep_settings("v2", results) == ""
    said = text.sweep_settings("v1", results)
    assert "ahead of the student at 5 of 8" in said
    assert "4.1x: ours **-1 pp**, v1 +0.91 pp: not the same sign." in said
    assert "no compression sweep" in text.sweep_settings("pre-v1-p0.5", results)


def test_pairs_whose_runs_do_not_scatter_say_so():
    same = {m: [10.0, 10.0] for m in ("student", "KD", "KD_IG", "IG")}
    said = text.ablation_pairs(paper_tests.ablation_pairs(same), profile="ci", data="d")
    assert "- KD_IG - KD: **0 pp**; the runs do not scatter" in said
    assert "Holm across the 0 pair(s) with a p-value" in said and "**held**" not in said
