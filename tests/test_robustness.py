"""Chapter 10's evaluation (igkd.robustness_eval) and statistics (igkd.robustness): the checkpoint
folder reader, the paired bootstrap, Holm, the closing paragraph and the summary rows. Tiny models
and synthetic data only: no training, seconds in all."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from igkd import corruptions, models, paths, profiles, report
from igkd import robustness as R
from igkd import robustness_eval as E
from igkd.errors import ConfigError

KD_FILE = "CIFAR10_KD_T2.5_alpha0.01_p0_gamma0_TestAcc1.0.pt"
IG_AT_FILE = "CIFAR10_IG_AT_T1_alpha0_p0.1_gamma0.8_TestAcc1.0.pt"


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """An empty run cache and no CIFAR-10: the ci profile falls back to synthetic data."""
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IGKD_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv("IGKD_CHECKPOINTS", raising=False)
    return tmp_path


def _at_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' attention-transfer key layout of a 2-module student (features.0, features.1):
    front_layers.0 and middle_layer."""
    out = {}
    for k, v in state.items():
        k = k.replace("features.0.", "front_layers.0.", 1).replace(
            "features.1.", "middle_layer.", 1
        )
        out[k] = v
    return out


@pytest.fixture
def folder(tmp_path):
    """Two tiny (1122x) students in the two published key layouts, and three foreign files."""
    d = tmp_path / "checkpoints"
    d.mkdir()
    torch.manual_seed(0)
    torch.save(models.student(1122).state_dict(), d / KD_FILE)
    torch.manual_seed(1)
    torch.save(_at_layout(models.student(1122).state_dict()), d / IG_AT_FILE)
    (d / "notes.txt").write_text("not a checkpoint")
    wrong = models.student(1122).state_dict()
    wrong["classifier.1.weight"] = torch.zeros(10, 7)  # the wrong shape
    torch.save(wrong, d / "wrong.pt")
    (d / "README.md").write_text("documentation: passed over silently")
    return d


# --- the folder reader and the evaluation ---------------------------------------------------------


def test_folder_reader_skips_foreign_files_with_one_line_each(folder):
    found, lines = E.from_folder(folder)
    assert [c.name for c in found] == ["IG_AT", "KD"]  # sorted by file name
    assert [c.family for c in found] == [R.IG, R.NO_IG]
    assert all(isinstance(c.model, models.Student) for c in found)
    assert len(lines) == 2
    assert "notes.txt" in lines[0] and "not a checkpoint" in lines[0]
    assert "wrong.pt" in lines[1] and "size mismatch" in lines[1]
    assert all("\n" not in line for line in lines)
    # the same weights under another name count once
    (folder / "copy.pt").write_bytes((folder / KD_FILE).read_bytes())
    found, lines = E.from_folder(folder)
    assert len(found) == 2 and any("copy.pt" in line and "same weights" in line for line in lines)
    assert E.from_folder(folder / "missing")[0] == []


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_the_rest_is_evaluated(folder, synthetic):
    found, lines = E.gather("ci", folder, run_students="none", teacher=False)
    assert len(found) == 2 and len(lines) == 2
    s = E.settings(
        "ci",
        test_images=20,
        corruptions=["brightness", "contrast"],
        severities=[1, 2],
        jpeg_qualities=[50],
        noise_sigmas=[0, 8],
        val_images=20,
        n_boot=200,
    )
    assert s.workers == 1 and s.reliability == ("brightness", 2) and s.sets == 1 + 4 + 1 + 2
    r = E.evaluate(found, s, progress=False)
    assert r.images == 20 and r.correct[("clean", 0)].shape == (2, 20)
    assert set(r.correct) >= {("contrast", 2), ("jpeg", 50), ("noise", 8.0)}
    assert r.logits[("brightness", 2)].shape == (2, 20, 10) and (r.temperature > 0).all()
    heat = E.heatmap_table(r)
    assert list(heat.columns) == ["IG_AT", "KD"] and list(heat.index) == [
        "clean",
        "brightness",
        "contrast",
    ]
    assert list(E.severity_table(r).index) == [0, 1, 2]
    summary = E.summary_table(r)
    assert list(summary.columns) == list(R.SUMMARY_COLUMNS)
    assert summary["mCE (%)"].isna().all()  # 2 of the 15 benchmark corruptions: no mCE
    boot = E.family_bootstrap(r, E.PUBLISHED)
    assert boot is not None and R.ALL in boot.index and boot["p_holm"].notna().sum() == 2
    assert E.seed_comparison(r, E.PUBLISHED) is None  # published files have no seeds
    records = E.records(r, summary, {E.PUBLISHED: boot}, {})
    assert [x["kind"] for x in records] == ["model", "model", "difference"]
    text = R.conclusion(
        summary,
        {E.PUBLISHED: boot},
        profile="ci",
        data=r.data,
        images=r.images,
        corruptions=2,
        severities=s.severities,
    )
    assert "2 model(s) were evaluated" in text and "synthetic" in text
    # each model's measurements are a run-cache record: read back without inference or generation
    records = E.planned_records(found, s)
    assert all(x.done and x.metrics["environment"]["profile"] == "ci" for x in records)
    assert len({x.path for x in records}) == 2

    def boom(*args, **kwargs):
        raise AssertionError("evaluated a model that has its record")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E.evaluation, "logits", boom)
        assert E.prepare(s, found, progress=False) == 0.0
        again = E.evaluate(found, s, progress=False)
    assert all(np.array_equal(again.correct[k], r.correct[k]) for k in r.correct)
    assert all(np.allclose(again.ece_t[k], r.ece_t[k]) for k in r.ece_t)
    assert np.array_equal(again.logits[("brightness", 2)], r.logits[("brightness", 2)])
    assert np.array_equal(again.temperature, r.temperature)
    # a damaged record is not used: that model is evaluated again (from the logits cache)
    (records[0].path / "record.npz").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="unreadable"):
        third = E.evaluate(found, s, progress=False)
    assert all(np.array_equal(third.correct[k], r.correct[k]) for k in r.correct)


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_onnx_runtime_backend_agrees_with_torch_and_keeps_its_own_cache(folder, synthetic):
    """The same models and sets by ONNX Runtime: the same predictions, logits within 1e-3, a record
    and logits cache of its own (torch's hashes unchanged), the ONNX file exported once and a
    damaged one exported again."""
    found, _ = E.gather("ci", folder, run_students="none", teacher=False)
    kw = dict(
        test_images=20, corruptions=["contrast"], severities=[2], jpeg_qualities=[50],
        noise_sigmas=[8], val_images=20, n_boot=200,
    )  # fmt: skip
    s_torch, s_ort = E.settings("ci", **kw), E.settings("ci", backend="onnxruntime", **kw)
    assert s_torch.backend == "torch" and E.settings("quick").backend == "onnxruntime"
    torch_rec, ort_rec = E.planned_records(found, s_torch), E.planned_records(found, s_ort)
    assert "backend" not in torch_rec[0].config and ort_rec[0].config["backend"] == "onnxruntime"
    assert {r.path for r in torch_rec}.isdisjoint(r.path for r in ort_rec)
    a, b = E.evaluate(found, s_torch, progress=False), E.evaluate(found, s_ort, progress=False)
    for k in a.correct:
        assert np.array_equal(a.correct[k], b.correct[k]), k
    assert np.abs(a.logits[("clean", 0)] - b.logits[("clean", 0)]).max() < 1e-3
    onnx_dir = paths.cache_dir() / "onnx"
    files = sorted(onnx_dir.glob("*.onnx"))
    assert len(files) == 2
    logit_dirs = {p.name for p in (paths.cache_dir() / "logits").iterdir()}
    assert len(logit_dirs) == 4 and sum(n.endswith("-onnxruntime") for n in logit_dirs) == 2
    # a damaged export is made again, not used
    files[0].write_bytes(b"not onnx")
    key = files[0].stem
    model = next(c.model for c in found if E.model_key(c.model) == key)
    with pytest.warns(UserWarning, match="does not load"):
        assert E.evaluation.onnx_file(model, key) == files[0]
    assert files[0].stat().st_size > 1000
    with pytest.raises(ConfigError, match="backend='tensorrt'"):
        E.settings("ci", backend="tensorrt")


def test_settings_follow_the_profile_and_refuse_bad_values():
    ci = E.settings("ci")  # a subset of the ci test set, every benchmark corruption (mCE needs all)
    assert ci.test_images < profiles.get("ci").test_size and ci.workers == 1
    assert set(ci.corruptions) == set(corruptions.BENCHMARK)
    quick = E.settings("quick")
    # the profile's own setting wins over the module default (quick: a 1,000-image subset)
    assert quick.test_images == profiles.get("quick").experiments["robustness_test_images"]
    assert E.settings("paper").test_images is None and len(quick.corruptions) == 19
    assert quick.severities == (1, 2, 3, 4, 5) and quick.reliability == ("gaussian_noise", 3)
    with pytest.raises(ConfigError, match="mist"):
        E.settings("ci", corruptions=["mist"])
    with pytest.raises(ConfigError, match="severity"):
        E.settings("ci", severities=[6])
    with pytest.raises(ConfigError, match="quality"):
        E.settings("ci", jpeg_qualities=[100])
    with pytest.raises(ConfigError, match="reliability"):
        E.settings("ci", reliability="fog:5")  # ci evaluates severity 3 only
    with pytest.raises(ConfigError, match="run_students"):
        E.from_run_cache("ci", "some")


def _fake_result(accuracy: dict[str, float], n: int = 400) -> E.Result:
    """A `Result` of run-cache students named "<method> s<seed>" without any inference: each gets
    the given clean accuracy (%) and 20 pp less on both severities of the 15 benchmark
    corruptions."""
    s = E.settings("ci", severities=[1, 2], jpeg_qualities=[50], noise_sigmas=[0], n_boot=200)
    rng = np.random.default_rng(0)
    found, correct = [], {}
    for name in accuracy:
        method, seed = name.split(" s")
        found.append(E.Candidate(name, method, E.RUN_CACHE, torch.nn.Identity(), int(seed)))
    keys = [("clean", 0), *((c, v) for c in s.corruptions for v in s.severities), ("jpeg", 50)]
    keys.append(("noise", 0.0))
    for key in keys:
        drop = 0 if key[0] in ("clean", "noise") else 20
        correct[key] = np.stack([rng.random(n) < (a - drop) / 100 for a in accuracy.values()])
    m = len(found)
    ece = {k: np.full(m, 10.0) for k in keys}
    logits = {k: rng.normal(size=(m, n, 10)) for k in (("clean", 0), s.reliability)}
    return E.Result(
        s,
        "synthetic",
        n,
        100,
        "synthetic",
        found,
        rng.integers(0, 10, n),
        correct,
        ece,
        ece,
        np.ones(m),
        np.full(m, 90.0),
        logits,
    )


def test_seed_comparison_and_the_student_reference():
    acc = {
        "KD_IG s0": 70,
        "KD_IG s1": 72,
        "KD s0": 60,
        "KD s1": 61,
        "student s0": 50,
        "student s1": 52,
    }
    r = _fake_result(acc)
    summary = E.summary_table(r)
    assert summary.attrs["reference"] == "run cache: student (mean of 2)"
    assert summary.loc["KD_IG s0", "mCE (%)"] < 100 < summary.loc["student s0", "mCE (%)"] + 10
    seeds = E.seed_comparison(r, E.RUN_CACHE)
    assert seeds is not None and seeds.attrs["seeds"] == [0, 1]
    assert seeds.loc[R.ALL, "test"] == "paired t" and seeds.loc[R.ALL, "n_a"] == 2
    # the IG family (KD_IG) against the others (KD and student), per seed
    clean = {k: 100 * r.correct[("clean", 0)][i].mean() for i, k in enumerate(acc)}
    ig = [clean["KD_IG s0"], clean["KD_IG s1"]]
    other = [(clean["KD s0"] + clean["student s0"]) / 2, (clean["KD s1"] + clean["student s1"]) / 2]
    assert seeds.loc[R.CLEAN, "diff"] == pytest.approx(np.mean(ig) - np.mean(other))
    assert seeds["p_holm"].notna().sum() == 15
    boot = E.family_bootstrap(r, E.RUN_CACHE)
    text = R.conclusion(
        summary,
        {E.RUN_CACHE: boot},
        {E.RUN_CACHE: seeds},
        profile="ci",
        data="synthetic",
        images=r.images,
        corruptions=15,
        severities=[1, 2],
    )
    assert "family means per seed" in text and "paired t" in text
    assert "Holm across the 15 corruptions" in text or "Holm's correction" in text
    assert E.seed_comparison(_fake_result({"KD_IG s0": 70, "KD s0": 60}), E.RUN_CACHE) is None
    fig = E.plot_reliability(r)
    assert len(fig.axes) == 4


# --- the paired bootstrap and Holm -----------------------------------------------------------------


def test_bootstrap_ci_covers_a_known_difference():
    rng = np.random.default_rng(0)
    n = 4000
    a = rng.random(n) < 0.80  # 80 % correct
    b = rng.random(n) < 0.70  # 70 %: a known difference of 10 pp
    out = R.paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert out["ci_low"] < 10 < out["ci_high"] and out["ci_low"] > 0
    assert out["difference (pp)"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert out["p"] == pytest.approx(1 / 2001)  # no resample reaches 0
    # identical sides: no difference, a CI of width 0 and p = 1
    same = R.paired_bootstrap(a, a, n_boot=200)
    assert same["difference (pp)"] == same["ci_low"] == same["ci_high"] == 0 and same["p"] == 1


def test_bootstrap_coverage_and_pairing():
    rng = np.random.default_rng(2)
    covered = 0
    for rep in range(100):
        a = rng.random(300) < 0.6
        b = rng.random(300) < 0.5
        out = R.paired_bootstrap(a, b, n_boot=400, seed=rep)
        covered += out["ci_low"] <= 10 <= out["ci_high"]
    assert covered >= 88  # 95 % nominal; 100 replications
    # paired: b is a with 5 % of its answers flipped to wrong, so the difference is known tightly
    a = rng.random(2000) < 0.8
    b = a.copy()
    b[np.flatnonzero(a)[:80]] = False  # 80 of 2,000 images: +4 pp exactly
    out = R.paired_bootstrap(a, b, n_boot=1000)
    assert out["difference (pp)"] == pytest.approx(4.0)
    assert out["ci_high"] - out["ci_low"] < 2.0  # unpaired, the width would be ~5 pp
    # families: (models, images) averaged per image; leading axes can be severities too
    fam = R.bootstrap_differences({"x": (np.stack([a, a]), np.stack([b, a]))}, n_boot=200)
    assert fam.loc["x", "difference (pp)"] == pytest.approx(2.0)


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ConfigError, match="n_boot"):
        R.paired_bootstrap([1, 0], [0, 1], n_boot=10)
    with pytest.raises(ConfigError, match="images"):
        R.bootstrap_differences({"x": (np.ones(5), np.ones(6))})


def test_holm_ignores_nan():
    adjusted, reject = R.holm([0.01, np.nan, 0.04, 0.5])
    assert np.isnan(adjusted[1]) and not reject[1]
    assert adjusted[0] == pytest.approx(0.03) and reject[0]
    assert adjusted[2] == pytest.approx(0.08) and not reject[2]


def test_family_of_a_method():
    assert [R.family(m) for m in ("KD_IG_AT", "IG", "KD", "student", "teacher")] == [
        R.IG,
        R.IG,
        R.NO_IG,
        R.NO_IG,
        R.TEACHER,
    ]


# --- the closing paragraph ------------------------------------------------------------------------


def _summary(clean: dict[str, float], corrupted: dict[str, float]) -> pd.DataFrame:
    rows = []
    for name in clean:
        rows.append(
            {
                "model": name,
                "group": E.PUBLISHED,
                "method": name,
                "seed": None,
                "family": R.family(name),
                "clean (%)": clean[name],
                "corrupted (%)": corrupted[name],
                "mCE (%)": 100.0,
                "relative mCE (%)": 100.0,
                "T": 1.5,
                "ECE clean (%)": 10.0,
                "ECE clean, T (%)": 5.0,
                "ECE corrupted (%)": 30.0,
                "ECE corrupted, T (%)": 20.0,
            }
        )
    return pd.DataFrame(rows).set_index("model")


def _paragraph(ig_extra: float, n: int = 2000, chance: bool = False) -> str:
    """Two models, KD_IG better than KD by `ig_extra` of the images under corruption."""
    rng = np.random.default_rng(0)
    base = 0.12 if chance else 0.6
    kd_clean = rng.random(n) < (base if chance else base + 0.2)
    kd = rng.random((2, n)) < base
    ig = kd.copy()
    k = int(abs(ig_extra) * n)
    if ig_extra > 0:
        ig[:, np.flatnonzero(~kd[0])[:k]] = True
    else:
        ig[:, np.flatnonzero(kd[0])[:k]] = False
    rows = {
        R.CLEAN: (kd_clean, kd_clean),
        "fog": (ig[:1], kd[:1]),
        "snow": (ig[1:], kd[1:]),
        R.ALL: (ig, kd),
        R.DROP: (ig.mean(0) - kd_clean, kd.mean(0) - kd_clean),
    }
    table = R.bootstrap_differences(rows, n_boot=500).rename(
        columns={"a (%)": f"{R.IG} (%)", "b (%)": f"{R.NO_IG} (%)"}
    )
    table["p_holm"], table["reject"] = np.nan, False
    per = ["fog", "snow"]
    table.loc[per, "p_holm"], table.loc[per, "reject"] = R.holm(table.loc[per, "p"])
    summary = _summary(
        {"KD_IG": 100 * kd_clean.mean(), "KD": 100 * kd_clean.mean()},
        {"KD_IG": 100 * ig.mean(), "KD": 100 * kd.mean()},
    )
    return R.conclusion(
        summary,
        {E.PUBLISHED: table},
        profile="ci",
        data="CIFAR-10 (JPEG q75 copy)",
        images=n,
        corruptions=2,
        severities=[3],
        val_images=100,
        reference="AT",
    )


def test_conclusion_follows_the_numbers():
    better, worse, none = _paragraph(0.05), _paragraph(-0.05), _paragraph(0.0)
    assert "**better**" in better and "**improves robustness**" in better
    assert "Holm" in better and "2 differ" in better
    assert "**worse**" in worse and "**lose more**" in worse
    assert "do not settle" in none and "none differs" in none
    for text in (better, worse, none):
        assert "profile `ci`" in text and "CIFAR-10 (JPEG q75 copy)" in text
        assert "on top of the JPEG q75 re-encoding" in text
        assert "One checkpoint per method" in text
        assert "from 10 % to 5 % on clean images" in text
    assert better != worse != none


def test_conclusion_handles_degenerate_numbers():
    chance = _paragraph(0.05, chance=True)
    assert "no verdict" in chance and "**better**" not in chance
    one = R.conclusion(
        _summary({"KD": 80.0}, {"KD": 60.0}),
        {E.PUBLISHED: None},
        profile="ci",
        data="synthetic",
        images=10,
        corruptions=1,
        severities=[1],
    )
    assert "Only one model (KD)" in one
    assert "No model could be evaluated" in R.conclusion(
        pd.DataFrame(columns=list(R.SUMMARY_COLUMNS)),
        profile="ci",
        data="synthetic",
        images=10,
        corruptions=1,
        severities=[1],
    )
    # seeds whose family means do not scatter: no t-test, a sentence
    from igkd import stats

    with warnings.catch_warnings():  # identical differences: scipy warns, the text says so
        warnings.simplefilter("ignore", RuntimeWarning)
        same = stats.compare([50.0, 50.0], [40.0, 40.0], paired=True)
    seeds = pd.DataFrame({R.ALL: same}).T
    two = _summary({"KD_IG s0": 50.0, "KD s0": 40.0}, {"KD_IG s0": 50.0, "KD s0": 40.0})
    two["group"] = E.RUN_CACHE
    text = R.conclusion(
        two,
        None,
        {E.RUN_CACHE: seeds},
        profile="ci",
        data="synthetic",
        images=10,
        corruptions=1,
        severities=[1],
    )
    assert "do not scatter" in text


# --- the summary page ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_summary_page_has_a_robustness_row(synthetic):
    table = report.summary_table("ci").set_index(["section", "what"])
    row = table.loc[(report.ROBUSTNESS_SECTION, "accuracy under corruption (pp)")]
    assert row["paper"] == "not reported" and row["ours"] == report.NOT_RUN
    record = {
        "kind": "difference",
        "group": "published",
        "test": "paired bootstrap over test images",
        "ig_models": 4,
        "other_models": 3,
        "diff": 8.03,
        "ci_low": 5.5,
        "ci_high": 10.4,
        "p": 0.0005,
        "clean_diff": 8.5,
        "images": 100,
        "corruptions": 15,
    }
    report.save_results("robustness", [{"kind": "model", "model": "KD"}, record], "ci")
    table = report.summary_table("ci")
    rows = table[table["section"] == report.ROBUSTNESS_SECTION]
    assert len(rows) == 1 and rows.iloc[0]["runs"] == 7
    assert rows.iloc[0]["ours"].startswith("+8.03 (95 % CI +5.50 to +10.40, paired bootstrap")
    assert "not reported" in report.summary_markdown(table)
