"""The chapters' closing paragraphs (`igkd.conclusions`) and the summary page's: they follow the
numbers passed in, print them to 4 significant digits, and say what cannot be told instead of
failing on the tiny numbers of the ci profile. No training: every number here is made up."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from igkd import conclusions, paper, stats

BETTER = {"student": [40.0, 41.0, 39.0], "KD_IG": [45.0, 46.0, 44.5]}
SAME = {"student": [40.0, 41.0, 39.0], "KD_IG": [40.2, 40.7, 39.4]}
WORSE = {"student": [40.0, 41.0, 39.0], "KD_IG": [35.0, 36.0, 34.5]}


def ablation(ours, **kw):
    return conclusions.ablation(ours, profile="test", data="made-up data", **kw)


# --- the verdict follows the numbers --------------------------------------------------------------


def test_an_ablation_in_another_regime_names_it_first():
    trained = "140x students, 10 epoch(s) per run, 20% of the training set"
    text = ablation(SAME, trained=trained)
    assert text.startswith(
        f"In profile `test` on made-up data, {trained} (the paper's ablation: 4.1x, 100 epochs "
        "on all of it), 3 seeds per method"
    )
    assert "the paper's ablation" not in ablation(SAME)
    kw = dict(profile="quick", data="d", teacher=[], sweep={}, ratios={})
    seeded = {m: dict(enumerate(v)) for m, v in SAME.items()}
    moved = conclusions.summary(ablation=seeded, size="140", **kw)
    assert "Ablation at 140x (the paper's ablation: 4.1x): " in moved
    assert "Ablation at 4.1x: " in conclusions.summary(ablation=seeded, **kw)
    assert "Ablation at 140x (the paper's ablation: 4.1x), KD_IG" in conclusions.summary(
        ablation={}, size="140", **kw
    )


def test_the_ablation_verdict_changes_with_the_numbers():
    held, unsettled, reversed_ = ablation(BETTER), ablation(SAME), ablation(WORSE)
    assert "its claim **held**" in held and "not settled" not in held
    assert "its claim **not settled**" in unsettled and "held**" not in unsettled
    assert "its claim **reversed**" in reversed_ and "KD_IG fell below it" in reversed_
    assert len({held, unsettled, reversed_}) == 3
    # a claim the data cannot settle says why, with the power analysis
    assert "cannot tell the methods apart" in unsettled and "seeds to detect" in unsettled
    assert "seeds to detect" not in held


def test_a_claim_held_on_its_own_ci_says_when_holm_takes_it_back():
    # One comparison's CI excludes 0, but with two more comparisons Holm's p is above 0.05.
    ours = {
        "student": [54.08, 51.63, 53.63],
        "KD": [55.09, 53.23, 53.9],
        "IG": [54.37, 53.04, 54.08],
        "KD_IG": [54.83, 52.61, 54.08],
    }
    text = ablation(ours)
    assert "its claim **held**" in text
    assert "KD_IG beat the plain student with a CI that excludes 0 (KD_IG not after Holm)" in text
    assert "after Holm's correction across the comparisons, p = 0.125" in text
    # the same difference alone in its family keeps its Holm p below 0.05: no such sentence
    alone = ablation({m: ours[m] for m in ("student", "KD_IG")})
    assert "its claim **held**" in alone and "not after Holm" not in alone
    assert "does not stay below 0.05" not in alone


def test_the_numbers_in_the_text_are_those_passed_in():
    text = ablation(BETTER)
    res = stats.compare(BETTER["KD_IG"], BETTER["student"], paired=True)
    assert f"**+{res['diff']:.4g} pp**" in text  # +5.167
    assert f"95 % CI +{res['ci_low']:.4g} to +{res['ci_high']:.4g}" in text
    assert f"p = {res['p']:.3g}" in text
    claim = paper.ablation_mean("KD_IG") - paper.ablation_mean("student")
    assert f"The paper reports +{claim:.4g} pp" in text
    # other numbers, other text
    shifted = {m: [v + 1.2345 for v in vals] for m, vals in BETTER.items()}
    shifted["KD_IG"] = [v + 1 for v in shifted["KD_IG"]]
    assert f"**+{res['diff'] + 1:.4g} pp**" in ablation(shifted)


def test_the_focus_method_comes_first_and_holm_is_reported():
    ours = {"student": [40, 41, 39], "KD": [41, 41.5, 40], "KD_IG": [45, 46, 44.5]}
    text = ablation(ours)
    assert text.index("- KD_IG - student") < text.index("- KD - student")
    assert text.count("Holm-adjusted") == 2


def test_the_papers_own_paired_t_is_checked_not_typed():
    recomputed = stats.compare_all(paper.ABLATION_RUNS, "student", paired=True)
    text = ablation(BETTER, paper_recomputed=recomputed)
    t = recomputed.loc["KD_IG", "t"]
    assert f"gives t = {t:.4g}" in text and "which this reproduces." in text
    assert "for 7 of 7 methods" in text
    wrong = recomputed.copy()
    wrong.loc["KD_IG", "t"] = 5.0
    text = ablation(BETTER, paper_recomputed=wrong)
    assert "gives t = 5 " in text and "does **not** reproduce" in text
    assert "for 6 of 7 methods" in text


def test_monte_carlo_gives_welch_and_paired_with_the_papers_means():
    held = conclusions.monte_carlo(BETTER, profile="test", data="d", fraction=0.8)
    unsettled = conclusions.monte_carlo(SAME, profile="test", data="d", fraction=0.8)
    assert "Welch t" in held and "Paired by draw" in held and held.count("**held**") == 2
    assert "not settled" in unsettled and "seeds to detect" in unsettled
    claim = paper.MONTE_CARLO["KD_IG"][0] - paper.MONTE_CARLO["student"][0]
    assert f"The paper reports +{claim:.4g} pp" in held
    assert f"student {40 - paper.MONTE_CARLO['student'][0]:.4g} pp" in held


def test_comparison_keeps_its_signature_for_other_notebooks():
    res = stats.compare([45, 46, 44.5], [40, 41, 39], paired=True)
    text = conclusions.comparison("A", "B", res, paper_diff=1.0, where=" at 4.1x", p_holm=0.01)
    assert text.startswith("A - B at 4.1x: **+5.167 pp**") and "Holm-adjusted 0.01" in text
    assert conclusions.verdict(0.1, 2.0, 1) == "held"
    assert conclusions.verdict(-2.0, -0.1, 1) == "reversed"
    assert conclusions.verdict(-1.0, 1.0, 1) == "not settled"
    assert conclusions.verdict(math.nan, 1.0, 1) == "not settled"
    assert conclusions.sig(92.01834) == "92.02" and conclusions.signed(0.123456) == "+0.1235"
    assert conclusions.power_sentence(0.0) == ""
    assert "seeds to detect 1 pp" in conclusions.power_sentence(0.5)


# --- degenerate inputs give a sentence ------------------------------------------------------------


@pytest.mark.parametrize(
    "ours",
    [
        {"student": [40.0], "KD_IG": [45.0]},  # one seed
        {"KD_IG": [45.0, 46.0]},  # no student
        {"student": [40.0, 41.0]},  # only the student
        {},  # nothing ran
        {"student": [10.0, 10.0], "KD_IG": [10.0, 10.0]},  # identical: NaN p
        {"student": [10.0, 10.0], "KD_IG": [12.0, 12.0]},  # constant difference: zero-width CI
        {"student": [10.0, 11.0, 10.0], "KD_IG": [12.0, 11.0]},  # unequal counts: Welch
    ],
    ids=["one-seed", "no-student", "student-only", "empty", "identical", "constant", "unequal"],
)
def test_degenerate_inputs_give_a_sentence(ours):
    for fn in (conclusions.ablation, conclusions.monte_carlo):
        text = fn(ours, profile="ci", data="d")
        assert isinstance(text, str) and text.strip()
        assert "**held**" not in text  # nothing here can support the paper's claim
    summary = conclusions.summary(
        profile="ci",
        data="d",
        teacher=[],
        ablation={m: dict(enumerate(v)) for m, v in ours.items()},
        sweep={},
        ratios={},
    )
    assert "What this build shows" in summary


def test_chance_level_profiles_say_so():
    text = ablation({"student": [10.0, 10.4], "KD_IG": [10.2, 11.0], "IG": [10.0, 10.0]})
    assert "within 5 pp of chance" in text
    assert "within 5 pp of chance" not in ablation(BETTER)


def test_unequal_counts_fall_back_to_welch():
    text = ablation({"student": [40.0, 41.0, 39.0], "KD_IG": [45.0, 46.0]})
    assert "Welch t" in text and "compared unpaired" in text


def test_every_chapter_function_survives_tiny_numbers():
    assert "no number" in conclusions.single_run(10.0, None, "KD_IG at 140x", "ci")
    acc, source = conclusions.paper_accuracy("KD_IG", "4.1")
    assert acc == pytest.approx(paper.ablation_mean("KD_IG")) and source
    text = conclusions.single_run(10.0, acc, "KD_IG at 4.1x", "ci", images=500, epochs=1)
    assert "within 5 pp of chance" in text and f"{10 - acc:.4g} pp" in text
    assert "evaluated" in conclusions.published({}, {}, images=0, data="d", profile="ci")
    text = conclusions.published(
        {"KD": 10.0, "IG": 10.0}, {"KD": 92.29, "IG": 92.01}, images=500, data="d", profile="ci"
    )
    assert "one per method" in text
    assert "Wilson" in conclusions.teacher(10.0, epochs=None, images=500, profile="ci", data="d")
    text = conclusions.integrated_gradients(
        {},
        store_steps=1,
        store_error=0.5,
        store_images=500,
        store_seconds=1.0,
        rate=0.0,
        study_images=4,
        profile="ci",
    )
    assert "0.5" in text
    assert "No sweep run" in conclusions.sweep([], profile="ci", data="d")
    one = [{"compression": "4.1", "compression_ratio": 4.1, "method": "KD_IG",
            "final_test_accuracy": 10.0}]  # fmt: skip
    assert "never ran at the same compression" in conclusions.sweep(one, profile="ci", data="d")
    teacher_row = {"images": 0, "accuracy (%)": math.nan}
    empty = pd.DataFrame()
    assert "No student" in conclusions.imagenet(
        teacher_row, empty, generated=False, data="d", profile="ci"
    )
    empty_lat = pd.DataFrame(columns=["b1 median (ms)"])
    empty_formats = pd.DataFrame(
        columns=["accuracy (%)"], index=pd.MultiIndex.from_tuples([], names=["model", "format"])
    )
    assert "not both timed" in conclusions.deployment(
        empty_lat, empty_formats, profile="ci", threads=1
    )
    trials = pd.DataFrame({"value": [10.0], "state": ["COMPLETE"]})
    text = conclusions.hyperparameters(
        {"alpha": 0.02},
        10.0,
        trials=trials,
        paper_choice={"alpha": 0.01},
        importances={},
        profile="ci",
        method="KD_IG_AT",
    )
    assert "alpha 0.02 (paper 0.01)" in text and "**not settled**" in text
    nothing = conclusions.hyperparameters(
        {}, math.nan, trials=[], paper_choice={}, importances=None, profile="ci", method="KD"
    )
    assert "No trial" in nothing


# --- the other chapters' paragraphs follow their numbers ------------------------------------------


def test_published_reports_the_gap_the_ranking_and_the_ig_difference():
    reported = {"KD": 92.29, "AT": 91.58, "KD_AT": 92.2, "IG": 92.01, "KD_IG": 92.28,
                "IG_AT": 91.84, "KD_IG_AT": 92.42}  # fmt: skip
    ours = {m: v - 8 for m, v in reported.items()}  # same order, 8 pp lower
    text = conclusions.published(ours, reported, images=10_000, data="JPEG", profile="quick")
    assert "**-8 pp** on average" in text and "Spearman rho +1" in text
    assert "carries over to this data: **held**" in text
    ig = sum(reported[m] for m in conclusions.WITH_IG) / 4
    free = sum(reported[m] for m in conclusions.IG_FREE) / 3
    assert f"{ig - free:+.4g} pp" in text
    upside_down = {m: 176 - v for m, v in reported.items()}  # the reported ranking reversed
    text = conclusions.published(upside_down, reported, images=10_000, data="J", profile="quick")
    assert "Spearman rho -1" in text and "carries over to this data: **reversed**" in text


def test_teacher_compares_with_the_papers_accuracy_through_the_test_sets_error():
    inside = conclusions.teacher(93.8, epochs=100, images=10_000, profile="paper", data="d")
    below = conclusions.teacher(80.0, epochs=6, images=10_000, profile="quick", data="d",
                                paper_epochs=100)  # fmt: skip
    assert "inside that interval" in inside and "**-0.11 pp**" in inside
    assert "below it" in below and "6 of the paper's 100 epochs" in below


def test_integrated_gradients_compares_the_store_with_50_steps():
    errors = {2: 0.5, 4: 0.1, 8: 0.02, 16: 0.01, 32: 0.005, 50: 0.004}
    kw = dict(store_images=50_000, store_seconds=900.0, rate=100.0, study_images=16, profile="q")
    text = conclusions.integrated_gradients(errors, store_steps=6, store_error=0.05, **kw)
    assert "**12.5 times** the 50-step error" in text and "as here" in text
    assert f"**{50_000 * 50 / 100 / 3600:.4g} h**" in text
    short = conclusions.integrated_gradients(
        {2: 0.5, 4: 0.1, 8: 0.02}, store_steps=1, store_error=0.8, **kw
    )
    assert "stops at 8 steps" in short and "not measured here" in short


def test_trend_and_spearman_on_few_points():
    rho, p = conclusions.spearman([1, 2, 3], [3, 2, 1])
    assert rho == pytest.approx(-1) and p == pytest.approx(1 / 3)  # exact, not scipy's 0
    assert "too few" in conclusions.trend({1: 1, 2: 2}, what="x", x_name="c")
    assert "same at all" in conclusions.trend({1: 10, 2: 10, 3: 10}, what="x", x_name="c")
    falls = conclusions.trend({1: 90, 2: 80, 4: 70, 8: 60, 16: 50}, what="x", x_name="c")
    assert "falls" in falls and "as here" in falls
    rises = conclusions.trend(
        {1: 50, 2: 60, 4: 70, 8: 80}, what="x", x_name="c", paper_points={1: 90, 2: 80, 4: 70}
    )
    assert "x rises" in rises and "the paper's accuracy falls" in rises and "does not show" in rises


def _sweep_results(diffs, runs=1):
    ratios = {"2.2": 2.19, "4.1": 4.115, "7.3": 7.29, "12": 12.04, "29": 28.97, "55": 54.59,
              "140": 139.4, "1122": 1121.7}  # fmt: skip
    out = []
    for (label, ratio), d in zip(ratios.items(), diffs, strict=False):
        for seed in range(runs):
            base = paper.SWEEP[label]["student"] + 0.1 * seed
            for method, acc in (("student", base), ("KD_IG", base + d + 0.05 * seed * seed)):
                out.append({"compression": label, "compression_ratio": ratio, "method": method,
                            "final_test_accuracy": acc})  # fmt: skip
    return out


def test_sweep_counts_the_compressions_where_kd_ig_leads():
    ahead = conclusions.sweep(_sweep_results([1.0] * 8), profile="paper", data="d")
    behind = conclusions.sweep(_sweep_results([-1.0] * 8), profile="paper", data="d")
    assert (
        "KD_IG is ahead of the student at 8 of 8 compression(s)" in ahead
        and "leads across sizes: **held**" in ahead
    )
    assert "ahead of the student at 0 of 8" in behind and "**reversed**" in behind
    few = conclusions.sweep(_sweep_results([1.0, 1.0]), profile="ci", data="d")
    assert "cannot reach p < 0.05" in few and "one run each, no test" in few
    ties = conclusions.sweep(_sweep_results([0.0, 0.0]), profile="ci", data="d")
    assert "Every difference is 0 (ties)" in ties and "**not settled**" in ties
    seeds = conclusions.sweep(_sweep_results([1.0, 1.0, 1.0], runs=3), profile="q", data="d")
    assert "paired t" in seeds


def test_imagenet_on_generated_images_concludes_nothing():
    row = {"images": 200, "accuracy (%)": 40.0}
    text = conclusions.imagenet(row, pd.DataFrame(), generated=True, data="gen", profile="ci")
    assert "Nothing can be concluded about ImageNet" in text and "40" not in text
    students = pd.DataFrame(
        {"images": [3000, 3000], "accuracy (%)": [80.0, 81.0],
         "balanced accuracy (%)": [84.0, 86.0], "paper balanced (%)": [85.71, 84.97]},
        index=["published KD_IG", "published KD"],
    )  # fmt: skip
    real = conclusions.imagenet(
        {"images": 5250, "accuracy (%)": 67.4}, students, generated=False, data="I", profile="p"
    )
    assert "inside our interval" in real
    assert "Highest balanced accuracy among them: published KD;" in real
    assert f"{((84 - 85.71) + (86 - 84.97)) / 2:+.4g} pp on average" in real


def test_deployment_reports_our_speed_up_beside_the_papers():
    lat = pd.DataFrame(
        {"b1 median (ms)": [20.0, 10.0], "b1 IQR (ms)": [1.0, 1.0], "cold forward (ms)": [50, 5],
         "FLOP ratio": [1.0, 1.5]},
        index=["teacher", "4.1x"],
    )  # fmt: skip
    index = pd.MultiIndex.from_tuples(
        [(m, f) for m in ("teacher", "4.1x student") for f in ("PyTorch fp32", "ONNX fp32",
                                                              "ONNX int8")])  # fmt: skip
    formats = pd.DataFrame(
        {"accuracy (%)": [90, 90, 89.5, 88, 88, 88], "Δ accuracy (pp)": [0, 0, -0.5, 0, 0, 0],
         "agreement with PyTorch (%)": [100, 100, 99, 100, 100, 98.5],
         "b1 median (ms)": [20, 18, 9, 10, 9, 6], "file (MiB)": [8, 8, 2, 2, 2, 0.5]},
        index=index,
    )  # fmt: skip
    text = conclusions.deployment(lat, formats, profile="p", threads=1)
    ratio = paper.LATENCY_MS["teacher"] / paper.LATENCY_MS["4.1"]
    assert "**2x**" in text and f"**{ratio:.4g}x**" in text and "10x" in text  # cold 50/5
    assert "int8 (teacher): agrees with PyTorch fp32 on 99 %" in text and "-0.5 pp" in text


def test_hyperparameters_name_the_best_trial_beside_the_papers_choice():
    trials = pd.DataFrame({"value": [60.0, 62.5, 61.0], "state": ["COMPLETE"] * 3})
    text = conclusions.hyperparameters(
        {"alpha": 0.05, "temperature": 3.0},
        62.5,
        trials=trials,
        paper_choice={"alpha": 0.01, "temperature": 2.5},
        importances={"alpha": 0.7, "temperature": 0.3},
        profile="quick",
        method="KD_IG_AT",
        val_images=1000,
    )
    assert "3 completed trial(s)" in text and "**62.5 %**" in text
    assert "alpha 0.05 (paper 0.01), temperature 3 (paper 2.5)" in text
    assert "70 % of the score's variance to alpha" in text and "+1.5 pp above the median" in text


# --- the summary page -----------------------------------------------------------------------------


def _table(teacher, ablation, sweep):
    from igkd import report

    table = pd.DataFrame(columns=report.COLUMNS)
    table.attrs.update(
        profile="quick",
        data="CIFAR-10 (JPEG q75 copy)",
        students="1 epoch(s) on all training images",
        values={"teacher": teacher, "ablation": ablation, "sweep": sweep},
    )
    return table


def test_the_summary_paragraph_follows_the_metrics():
    from igkd import report

    sweep = {"student": {"4.1": 60.0, "29": 50.0, "1122": 30.0}}
    better = {"student": {0: 40.0, 1: 41.0, 2: 39.0}, "KD_IG": {0: 45.0, 1: 46.0, 2: 44.5}}
    same = {"student": {0: 40.0, 1: 41.0, 2: 39.0}, "KD_IG": {0: 40.2, 1: 40.7, 2: 39.4}}
    a = report.conclusions_markdown(_table([80.0], better, sweep))
    b = report.conclusions_markdown(_table([85.0], same, {}))
    assert a != b
    assert "its claim **held**" in a and "paired t" in a
    assert "its claim **not settled**" in b
    assert f"**{80 - paper.TEACHER_ACCURACY:+.4g} pp**" in a
    assert f"**{85 - paper.TEACHER_ACCURACY:+.4g} pp**" in b
    assert "student's accuracy falls with compression" in a
    assert "Compression sweep: not run in this profile." in b
    none = report.conclusions_markdown(_table([], {}, {}))
    assert "Teacher: not run in this profile." in none and "not run in this profile with" in none
    # seeds unknown (runs without a seed in their metrics): unpaired
    unseeded = {m: {(None, i): v for i, v in enumerate(d.values())} for m, d in better.items()}
    assert "Welch t" in report.conclusions_markdown(_table([80.0], unseeded, {}))
    page = report.summary_markdown(_table([80.0], better, sweep), "header line")
    assert a in page and page.index("header line") < page.index(a)
    assert page.count("\n## ") == 0  # the paragraph adds no section of its own
