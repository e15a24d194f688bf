"""The paper's numbers beside ours, read from the run cache: the book's summary page.

Nothing here is typed by hand. Every "ours" value comes from a finished run's `metrics.json` in
the run cache (`IGKD_RUNS`), counted as `igkd.profile_runs` says (by the purpose each run records),
or from a result file a notebook wrote with `igkd.result_files.save_results`; every "paper" value
comes from `igkd.paper`. What was not run in the profile says so. `summary_table` builds the table,
`summary_markdown` writes the page; the page opens with a paragraph of conclusions
(`conclusions_markdown`) that `igkd.conclusions.summary` writes from the same runs the tables count.

The names of `igkd.result_files` and `igkd.profile_runs` stay importable from here.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from igkd import conclusions, models, paper
from igkd.profile_runs import (  # noqa: F401 (re-exported: report.collect, report.tag_untagged)
    COUNTED,
    ProfileRuns,
    collect,
    students_of,
    tag_untagged,
)
from igkd.result_files import (  # noqa: F401 (re-exported: report.save_results, ...)
    RESULT_NAMES,
    imagenet_records,
    latency_records,
    load_results,
    results_file,
    save_results,
)

NOT_RUN = "not run in this profile"
SWEEP_METHODS = ("student", "KD", "IG", "KD_IG")  # the paper's sweep table (ESM Table 13)
MONTE_CARLO_METHODS = tuple(paper.MONTE_CARLO)
SWEEP_SECTION = "Compression sweep (ESM Table 13)"
COLUMNS = ["section", "what", "paper", "ours", "runs", "difference (pp)"]


# --- the table ------------------------------------------------------------------------------------


def _stats(values: list[float]) -> str:
    """'91.23 ± 0.31' (mean ± sample sd) or '91.23' for one value; accuracies to 2 decimals."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _trained(epochs: int, share: float) -> str:
    """'10 epoch(s) on 20% of the training set' (or '... on all training images')."""
    return f"{epochs} epoch(s) on " + (
        f"{share:.0%} of the training set" if share < 1 else "all training images"
    )


def _row(section: str, what: str, paper_text: str, ours: list[float], paper_mean=None) -> dict:
    diff = None
    if ours and paper_mean is not None:
        diff = round(statistics.fmean(ours) - paper_mean, 2)
    return {
        "section": section,
        "what": what,
        "paper": paper_text,
        "ours": _stats(ours) if ours else NOT_RUN,
        "runs": len(ours),
        "difference (pp)": diff,
    }


def _accuracies(found: ProfileRuns, method: str, compression: str, experiment: str) -> list[float]:
    """Final-epoch test accuracies (the paper's number) of `students_of`."""
    return [m["final_test_accuracy"] for m in students_of(found, method, compression, experiment)]


def _by_seed(found: ProfileRuns, method: str, compression: str, experiment: str) -> dict:
    """{seed: final test accuracy} of `students_of` (the same runs as `_accuracies`); a run whose
    metrics name no seed is keyed by None plus its position, so no two runs collide."""
    out: dict = {}
    for i, m in enumerate(students_of(found, method, compression, experiment)):
        seed = m.get("environment", {}).get("seed")
        out[seed if seed is not None and seed not in out else (None, i)] = m["final_test_accuracy"]
    return out


def summary_table(profile: str | None = None, data_root: str | Path | None = None) -> pd.DataFrame:
    """Paper vs ours, one row per number: teacher, the eight methods at 4.1x, the Monte Carlo,
    the compression sweep, the ImageNet subset, latency and robustness (notebook 10; not in the
    paper).

    Columns: section, what, paper, ours ("mean ± sd" over `runs` runs, or "not run in this
    profile"), runs, difference (pp) (our mean minus the paper's). Accuracies are CIFAR-10 top-1
    test accuracy in %, final epoch, as the paper reports them.
    """
    found = collect(profile, data_root)
    rows = []
    # The raw numbers behind the rows, for the page's opening paragraph (`conclusions_markdown`).
    values: dict = {"teacher": [], "ablation": {}, "sweep": {}}

    teacher = "Teacher (MobileNet-V2, 2,236,682 parameters)"
    ours = [m["final_test_accuracy"] for m in found.teachers]
    values["teacher"] = ours
    rows.append(
        _row(
            teacher,
            "test accuracy (%)",
            f"{paper.TEACHER_ACCURACY:.2f}",
            ours,
            paper.TEACHER_ACCURACY,
        )
    )

    # The ablation's student size: the paper's 4.1x, or the profile's ablation_regime's.
    size = found.ablation_size
    values["ablation_size"] = size
    section = "The eight methods at 4.1x (ten runs each in the paper)" + (
        "" if size == "4.1" else f"; ours at {size}x, the profile's ablation regime"
    )
    for method in paper.METHODS:
        runs_ = paper.ABLATION_RUNS[method]
        text = f"{_stats(list(runs_))} (best {max(runs_):.2f})"
        ours = _accuracies(found, method, size, "ablation")
        values["ablation"][method] = _by_seed(found, method, size, "ablation")
        # Another student size has no paper number to subtract: the difference stays empty.
        same = paper.ablation_mean(method) if size == "4.1" else None
        rows.append(_row(section, method, text, ours, same))

    section = "Monte Carlo, Train80Rand at 4.1x (60 runs each in the paper)"
    for method in MONTE_CARLO_METHODS:
        mean, median, var = paper.MONTE_CARLO[method]
        text = f"{mean:.2f} ± {var**0.5:.2f} (median {median:.2f})"
        rows.append(
            _row(section, method, text, _accuracies(found, method, "4.1", "monte-carlo"), mean)
        )

    section = SWEEP_SECTION
    for label, table in paper.SWEEP.items():
        ratio = models.COMPRESSION_TABLE[label].ratio
        for method in SWEEP_METHODS:
            ours = _accuracies(found, method, label, "sweep")
            if ours:
                values["sweep"].setdefault(method, {})[label] = statistics.fmean(ours)
            what = f"{label}x ({ratio:.4g}), {method}"
            rows.append(_row(section, what, f"{table[method]:.2f}", ours, table[method]))

    section = "ImageNet-32 subset, teacher-correct images (accuracy %)"
    imagenet = {r["model"]: r for r in load_results("imagenet", found.profile)}
    teacher_row = (
        paper.IMAGENET_TEACHER_ACCURACY,
        paper.IMAGENET_TEACHER_BALANCED,
        paper.IMAGENET_TEACHER_KAPPA,
    )
    for method, (acc, balanced, kappa) in {"teacher": teacher_row, **paper.IMAGENET_SUBSET}.items():
        text = f"{acc:.2f} (balanced {balanced:.2f}, kappa {kappa:.4g})"
        if method == "teacher":
            text += ", all 5,250 images"
        r = imagenet.get(method)
        row = _row(section, method, text, [r["accuracy"]] if r else [], acc)
        if r:
            row["runs"] = r.get("runs", 1)
            row["ours"] += f" (balanced {r['balanced_accuracy']:.2f}, kappa {r['kappa']:.4g})"
            if r.get("generated"):  # the ci fallback: the code ran, the number means nothing
                row["ours"] += " on generated images, not ImageNet"
                row["difference (pp)"] = None
        rows.append(row)

    section = "Latency, one image, PyTorch fp32 (ms)"
    latency = {
        r["model"]: r["median_ms"]
        for r in load_results("latency", found.profile)
        if r.get("batch") == 1 and r.get("runtime") == "pytorch" and r.get("precision") == "fp32"
    }
    for model, ms in paper.LATENCY_MS.items():
        what = "teacher" if model == "teacher" else f"{model}x student"
        row = _row(section, what, f"{ms:.4g}", [latency[model]] if model in latency else [])
        if model in latency:  # milliseconds: 4 significant digits, not 2 decimals
            row["ours"] = f"{latency[model]:.4g}"
        rows.append(row)
    rows += _robustness_rows(found.profile)
    rows += _fix_rows(found.profile)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs.update(
        profile=found.profile,
        data=found.data,
        values=values,
        other_students=found.other_students,
        untagged=found.untagged,
        provenance=provenance(found.run_paths),
        students=_trained(found.epochs, found.share)
        + (
            ""
            if (size, found.ablation_epochs, found.ablation_share)
            == ("4.1", found.epochs, found.share)
            else f"; the ablation: {size}x, {_trained(found.ablation_epochs, found.ablation_share)}"
        ),
    )
    return table


ROBUSTNESS_SECTION = "Robustness to corruptions, IG overlay - no overlay (not in the paper)"


def _robustness_rows(profile: str) -> list[dict]:
    """The summary's robustness rows from notebook 10's records: per group of models, the IG
    overlay family's accuracy under corruption minus the others' (pp), with its 95 % CI and the
    clean difference (*runs*: the models compared, or the seeds of a paired t); one "not run" row
    without records. The paper reports no such number."""
    found = [r for r in load_results("robustness", profile) if r.get("kind") == "difference"]
    if not found:
        return [_row(ROBUSTNESS_SECTION, "accuracy under corruption (pp)", "not reported", [])]
    rows = []
    for r in found:
        models = f", {r['ig_models']} vs {r['other_models']} models" if "ig_models" in r else ""
        what = f"{r['group']}: accuracy under corruption (pp{models})"
        row = _row(ROBUSTNESS_SECTION, what, "not reported", [r["diff"]])
        row["runs"] = r.get("ig_models", 0) + r.get("other_models", 0) or r.get("seeds", 1)
        ci = (
            f"95 % CI {r['ci_low']:+.2f} to {r['ci_high']:+.2f}, "
            if r.get("ci_low") is not None and r.get("ci_high") is not None
            else ""
        )
        row["ours"] = (
            f"{r['diff']:+.2f} ({ci}{r['test']}; clean {r['clean_diff']:+.2f}; "
            f"{r['images']:,} images, {r['corruptions']} corruptions)"
        )
        rows.append(row)
    return rows


FIX_SECTION = "Fixes of the published code, igkd's default - the published behaviour (pp)"


def _fix_rows(profile: str) -> list[dict]:
    """One row per fix of the published code from notebook 04's fix ablation (`fixes.records`):
    the seed-paired difference with its 95 % CI and Holm's p; one "not run" row without records.
    The paper measures none of them (it used the published code)."""
    found = load_results("fixes", profile)
    if not found:
        return [_row(FIX_SECTION, "each fix (notebook 04)", "not measured", [])]
    rows = []
    for r in found:
        diff = r.get("difference (pp)")
        row = _row(FIX_SECTION, f"{r['fix']}: {r['method']}", "not measured", [])
        row["runs"] = r["seeds"]
        if diff is None:
            text = "no difference measured"
        else:
            ci = (
                f"95 % CI {r['CI low']:+.2f} to {r['CI high']:+.2f}, paired t p {r['p']:.3g}, "
                f"Holm {r['Holm p']:.3g}; "
                if r.get("p") is not None
                else "no test (fewer than 2 seeds or no scatter); "
            )
            text = f"{diff:+.2f} ({ci}{r['other']})"
        row["ours"] = text
        rows.append(row)
    return rows


def source_of(run: Path | object) -> str:
    """Where one run came from, for a sentence: "(from `archive.tar.gz`, revision abc1234)" for an
    imported run, "(computed here, revision abc1234)" otherwise."""
    from igkd import archive

    info = archive.provenance(run)
    rev = f"revision {info['git_revision'][:7]}" if info["git_revision"] else "revision unknown"
    if info["imported_from"]:
        return f"(from `{info['imported_from']}`, {rev})"
    return f"(computed here, {rev})"


def provenance(run_paths: list[Path]) -> str:
    """Which code revision computed the counted runs, and which of them came from an archive
    (`igkd runs import`) made where and when: one sentence for the page, '' without runs."""
    from igkd import archive

    if not run_paths:
        return ""
    revs = archive.revisions(run_paths)
    text = (
        f"The {len(run_paths)} runs counted here were computed by igkd git revision(s) "
        + (", ".join(f"`{r}`" for r in revs) if revs else "unknown")
        + "."
    )
    imported: dict[str, list[dict]] = {}
    for p in run_paths:
        info = archive.provenance(p)
        if info.get("imported_from"):
            imported.setdefault(info["imported_from"], []).append(info)
    for name, infos in imported.items():
        m = infos[0].get("machine") or {}
        text += (
            f" {len(infos)} of them were imported from `{name}` (made {infos[0].get('created')}"
            + (f" on {m.get('cpu')}, {m.get('gpu') or 'no GPU'}" if m else "")
            + ")."
        )
    return text


# --- markdown --------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:+.2f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of `frame`'s columns (no index); floats signed to 2 decimals, None empty."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([head, rule, *body])


def conclusions_markdown(table: pd.DataFrame) -> str:
    """The page's opening paragraph (`conclusions.summary`), from the runs `summary_table` counted
    (its `values` attribute): the teacher's gap, KD_IG - student at the ablation's size with its CI and verdict,
    and the sweep's trend; what was not run says so."""
    values = table.attrs.get("values", {})
    return conclusions.summary(
        profile=table.attrs.get("profile", "unknown"),
        data=table.attrs.get("data", "unknown data"),
        teacher=values.get("teacher", []),
        ablation=values.get("ablation", {}),
        sweep=values.get("sweep", {}),
        ratios={label: row.ratio for label, row in models.COMPRESSION_TABLE.items()},
        size=values.get("ablation_size", "4.1"),
    )


def summary_markdown(table: pd.DataFrame, header: str = "") -> str:
    """The summary page (MyST markdown): the opening paragraph of conclusions, then one table per
    section of `summary_table`'s result."""
    parts = [
        "# Results: the paper and this build side by side",
        "",
        header,
        "",
        conclusions_markdown(table),
        "",
        "Every number under *ours* was read, when this book was built, from the `metrics.json` of "
        "a finished run in the run cache (or from a result file a notebook wrote); the paper's "
        "numbers come from `igkd.paper`. Accuracies are CIFAR-10 top-1 test accuracy in % at the "
        "last epoch, as the paper reports them; *ours* is the mean ± sample sd over *runs*, "
        "*difference* our mean minus the paper's mean, in percentage points. Our runs use the "
        f"profile's data and training length (here **{table.attrs['profile']}**, on "
        f"**{table.attrs['data']}**; students: {table.attrs.get('students', 'the profile recipe')}),"
        " so they are comparable with the paper only in the `paper` profile on the original "
        "CIFAR-10.",
        "",
    ]
    if table.attrs.get("provenance"):
        parts += [table.attrs["provenance"], ""]
    if table.attrs.get("other_students"):
        parts += [
            f"{table.attrs['other_students']} student run(s) of this profile made for other "
            "experiments (a single run, tuning, the regime study, the fix ablation's other arms, "
            "chapter 13's attention students) are not counted here.",
            "",
        ]
    if table.attrs.get("untagged"):
        parts += [
            f"{table.attrs['untagged']} student run(s) of this profile record no purpose (made "
            "before runs recorded one) and are not counted; `igkd runs migrate` tags them.",
            "",
        ]
    for section, rows in table.groupby("section", sort=False):
        if section == SWEEP_SECTION:
            parts += [f"## {section}", "", _sweep_markdown(rows), ""]
        else:
            parts += [f"## {section}", "", markdown_table(rows.drop(columns="section")), ""]
    return "\n".join(parts)


def _sweep_markdown(rows: pd.DataFrame) -> str:
    """The sweep as compression x method, each cell 'paper / ours (runs)'."""
    cells: dict[str, dict[str, str]] = {}
    for r in rows.itertuples(False):
        label, method = r.what.rsplit(", ", 1)
        ours = f"{r.ours} ({r.runs})" if r.runs else "not run"
        cells.setdefault(label, {})[method] = f"{r.paper} / {ours}"
    frame = pd.DataFrame.from_dict(cells, orient="index").rename_axis("compression").reset_index()
    return (
        "Each cell: the paper's accuracy / ours (number of runs); *not run*: not run in this "
        "profile.\n\n" + markdown_table(frame)
    )
