"""The fix ablation (chapter 04): its arms differ in one field, its table pairs by seed and adjusts
with Holm, its records reach the summary page, and its paragraph follows the numbers."""

from __future__ import annotations

import math

import pytest

from igkd import fixes, report
from igkd.conclusions.fixes import fix_ablation
from igkd.config import StudentConfig
from igkd.errors import ConfigError


def test_each_fix_changes_one_field_and_default_arms_are_shared():
    cs = fixes.configs("ci", seeds=range(2), epochs=1)
    base = StudentConfig(4.1, "KD_IG", profile="ci", epochs=1)
    for fix in fixes.FIXES:
        ours, other = fixes.arms(fix, base)
        changed = {k for k, v in ours.kwargs().items() if other.kwargs().get(k) != v}
        changed |= set(other.kwargs()) - set(ours.kwargs())
        assert changed == {fix.field} and ours.method == fix.method
    # KD_IG's default arm serves four fixes: per seed 1 KD_IG + 4 others + KD_IG_AT's two arms.
    assert len(cs) == len(set(cs)) == 2 * 7
    assert [c.seed for c in cs] == sorted(c.seed for c in cs)  # seed-major
    with pytest.raises(ConfigError, match="unknown fix"):
        fixes.chosen(["overlay"])


def _results(cs, acc):
    return [{"final_test_accuracy": acc(c), "status": "computed"} for c in cs]  # run_many's entries


def test_table_pairs_by_seed_and_adjusts_across_fixes():
    cs = fixes.configs("ci", seeds=range(4), which=["overlay order", "AT loss form"])

    def acc(c):  # the published overlay costs 1 pp (with seed noise); AT form changes nothing
        noise = [0.1, -0.2, 0.05, 0.3][c.seed]
        return 50 + noise - (1.0 + noise / 2 if c.overlay_order == "published" else 0)

    a = fixes.accuracies(_results(cs, acc), cs)
    assert len(a["overlay order"][0]) == 4
    t = fixes.table(a, "ci")
    row = t.set_index("fix").loc["overlay order (differences.md 3)"]
    assert row["difference (pp)"] == pytest.approx(1.0 + 0.25 / 4 / 2, abs=1e-9)
    assert row["CI low"] > 0 and row["Holm p"] >= row["p"]
    at = t.set_index("fix").loc["AT loss form (differences.md 4)"]
    assert at["difference (pp)"] == 0 and math.isnan(at["p"])  # no scatter: no test
    records = fixes.records(t)
    assert records[1]["p"] is None and records[0]["seeds"] == 4


def test_summary_rows_come_from_the_records(monkeypatch):
    monkeypatch.setattr(report, "load_results", lambda name, profile: [])
    assert report._fix_rows("ci")[0]["ours"] == report.NOT_RUN
    rec = {"fix": "overlay order", "method": "KD_IG", "other": "overlay_order=published",
           "seeds": 3, "difference (pp)": 0.5, "CI low": 0.1, "CI high": 0.9, "p": 0.03,
           "Holm p": 0.06}  # fmt: skip
    monkeypatch.setattr(report, "load_results", lambda name, profile: [rec])
    row = report._fix_rows("ci")[0]
    assert row["runs"] == 3 and "+0.50" in row["ours"] and "Holm 0.06" in row["ours"]


def test_paragraph_follows_the_numbers():
    labels = {"overlay order": ("aligned", "published")}
    clear = {"overlay order": ([51.0, 52.1, 50.9, 51.6], [50.0, 50.9, 50.1, 50.4])}
    noisy = {"overlay order": ([51.0, 49.1, 50.9, 48.6], [50.0, 50.9, 50.1, 50.4])}
    a = fix_ablation(clear, {"overlay order": 0.01}, labels, "ci", "synthetic")
    b = fix_ablation(noisy, {"overlay order": 0.9}, labels, "ci", "synthetic")
    assert "changed the test accuracy" in a and "overlay order (+)" in a
    assert "No fix changed" in b and a != b
    one = fix_ablation({"overlay order": ([51.0], [50.0])}, {}, labels, "ci", "synthetic")
    assert "needs 2 seeds" in one
