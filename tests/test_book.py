"""The book: notebooks executed in the ci profile, built with warnings as errors, and every page
opened in a real headless Chromium; plus the summary's choice of runs and prepare's refusals."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tarfile
import time
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest

from igkd import archive, book, imagenet, paper, pipeline, profiles, report, runs, train
from igkd.config import StudentConfig, purpose
from igkd.errors import BookError, ConfigError


def require_browser() -> bool:
    """The browser test skips without Chromium, except where IGKD_REQUIRE_BROWSER=1 (CI)."""
    return os.environ.get("IGKD_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of book/ built in the ci profile and checked in Chromium: (book dir, pages found).

    The notebooks run in kernels that inherit this session's IGKD_RUNS, so the teacher, IG maps
    and students that nbval's executions of the same notebooks made are reused, not recomputed.
    """
    chromium = book.find_chromium()
    if chromium is None:
        if require_browser():
            pytest.fail("no Chromium found (IGKD_REQUIRE_BROWSER=1): apt-get install chromium")
        pytest.skip("no Chromium here: apt-get install chromium (CI requires it)")
    src = tmp_path_factory.mktemp("book") / "book"
    ignore = shutil.ignore_patterns("_build", "executed", *book.GENERATED)
    shutil.copytree(book.BOOK_DIR, src, ignore=ignore)
    times, start = {}, time.perf_counter()
    # Two chapters at a time, one torch thread each (make test sets OMP_NUM_THREADS=1): the book
    # was CI's longest path, run on one core while the other finished the unit tests.
    book.execute("ci", src, jobs=2)
    times["execute"] = time.perf_counter() - start
    book.prepare(src)
    times["prepare"] = time.perf_counter() - start - times["execute"]
    html = book.build(src)
    times["build"] = time.perf_counter() - start - times["execute"] - times["prepare"]
    found = book.check_site(html, book.pages(src), chromium)
    times["browser"] = time.perf_counter() - start - sum(times.values())
    print("book test times (s):", {k: round(v, 1) for k, v in times.items()})
    return src, found


def test_every_chapter_renders(built):
    src, found = built
    chapters = book.notebooks(book.NOTEBOOKS_DIR)
    assert [f"executed/{p.stem}.html" for p in chapters] == [
        p for p in found if p.startswith("executed/")
    ]
    for path in chapters:
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0].lstrip("# ")
        page = found[f"executed/{path.stem}.html"]
        assert page["h1"] and page["h1"][0].replace("\u2019", "'") == title, path.name
        assert "How this chapter was run" in page["text"], path.name
        assert 'profile = "ci"' not in page["text"], "papermill's injected cell is removed"
        assert 'os.environ.get("IGKD_PROFILE", "auto")' in page["text"], "parameters are shown"
    assert found["executed/00_published_checkpoints.html"]["tables"], "the result table renders"
    for name in ("intro.html", "differences.html", "reproducing.html"):
        assert found[name]["h1"], name


def test_no_missing_image_and_no_traceback(built):
    _, found = built
    assert book.problems(found) == []
    chapters = {name: page for name, page in found.items() if name.startswith("executed/")}
    assert chapters
    for name, page in chapters.items():  # every chapter shows at least one figure
        assert page["images"] >= 1, f"{name} has no figure"
        # ... and ends with its generated conclusion: the heading, then the paragraph's text.
        assert "What this shows" in page["text"], f"{name} has no 'What this shows'"
        paragraph = page["text"].rsplit("What this shows", 1)[1]
        assert len(paragraph.split()) >= 30, f"{name}: no generated paragraph after its heading"


def test_banner_states_profile_data_and_machine(built):
    _, found = built
    for name, page in found.items():
        assert "profile ci" in page["banner"] and "data:" in page["banner"], name
        assert "machine:" in page["banner"] and "cores" in page["banner"], name


def test_summary_table_renders_paper_beside_ours(built):
    _, found = built
    page = found["summary.html"]
    assert page["h1"] == ["Results: the paper and this build side by side"]
    tables = page["tables"]
    # teacher, ablation, Monte Carlo, sweep, ImageNet, latency, robustness, fixes of the code
    assert len(tables) == 8
    teacher = tables[0]
    assert "93.91" in teacher and report.NOT_RUN not in teacher  # notebook 01 trained it
    ablation = next(t for t in tables if "KD_IG_AT" in t and "best" in t)
    kd_ig = next(line for line in ablation.splitlines() if line.startswith("KD_IG\t"))
    assert "92.02" in kd_ig and report.NOT_RUN not in kd_ig  # notebook 03 trained it
    imagenet, latency, fixes = tables[-4], tables[-3], tables[-1]
    assert "overlay order" in fixes and report.NOT_RUN not in fixes  # notebook 04 measured them
    assert "generated images, not ImageNet" in imagenet  # no ImageNet here: labelled, not a result
    teacher_latency = next(line for line in latency.splitlines() if line.startswith("teacher\t"))
    assert (
        "140" in teacher_latency and report.NOT_RUN not in teacher_latency
    )  # notebook 08 timed it


# --- without building ------------------------------------------------------------------------------


@pytest.fixture
def ci_cache(tmp_path, monkeypatch):
    """An empty run cache and no CIFAR-10, so the ci profile uses synthetic data."""
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IGKD_DATA", str(tmp_path / "no-data"))
    return tmp_path


def _fake_run(kind: str, config: dict, metrics: dict) -> runs.Run:
    return runs.get_or_run(kind, config, lambda run: metrics)


def _student(
    method, seed, accuracy, train_images, profile="ci", tags=(), compression="4.1", **settings
):
    s = StudentConfig(compression, method, profile="ci", **settings).settings()
    _, test = pipeline.datasets(profiles.get("ci"))
    config = {"model": "student", "method": method, "seed": seed, "settings": s}
    metrics = {
        "method": method,
        "compression": compression,
        "final_test_accuracy": accuracy,
        "train_images": train_images,
        "settings": s,
        "environment": {"profile": profile},
    }
    run = _fake_run("student", {**config, "test_data": test.fingerprint}, metrics)
    for tag in tags:
        run.add_purpose(purpose(tag, profile))


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_summary_counts_only_the_profiles_default_runs(ci_cache):
    prof = profiles.get("ci")
    train_ds, test_ds = pipeline.datasets(prof)
    recipe = dataclasses.asdict(train.Recipe(**prof.teacher_recipe))
    teacher = {"model": "teacher", "recipe": recipe, "seed": 0, "test_data": test_ds.fingerprint}
    _fake_run("teacher", teacher, {"final_test_accuracy": 50.0, "environment": {"profile": "ci"}})
    n = len(train_ds)
    both = ("ablation", "sweep")
    _student("KD_IG", 0, 40.0, n, tags=both)
    _student("KD_IG", 1, 42.0, n, tags=both)
    _student("KD_IG", 2, 99.0, n, profile="quick", tags=both)  # another profile: not counted
    _student("KD_IG", 3, 99.0, n, teacher_outputs="cached", tags=["single"])  # notebook 03's
    _student("KD_IG", 4, 99.0, n, alpha=0.5)  # records no purpose: not counted, said so
    _student("student", 0, 30.0, int(0.8 * n), tags=["monte-carlo"])
    report.save_results("latency", [{"model": "4.1", "runtime": "pytorch", "precision": "fp32",
                                     "batch": 1, "median_ms": 1.2345}], "ci")  # fmt: skip

    table = report.summary_table("ci").set_index(["section", "what"])
    rows = {what: row for (_, what), row in table.iterrows()}
    assert rows["test accuracy (%)"]["ours"] == "50.00"
    assert rows["test accuracy (%)"]["difference (pp)"] == round(50 - paper.TEACHER_ACCURACY, 2)
    ablation = table.loc["The eight methods at 4.1x (ten runs each in the paper)"]
    assert ablation.loc["KD_IG", "ours"] == "41.00 ± 1.41" and ablation.loc["KD_IG", "runs"] == 2
    assert ablation.loc["student", "ours"] == report.NOT_RUN  # its only run is a Monte Carlo run
    mc = table.loc["Monte Carlo, Train80Rand at 4.1x (60 runs each in the paper)"]
    assert mc.loc["student", "ours"] == "30.00" and mc.loc["KD", "ours"] == report.NOT_RUN
    sweep = table.loc["Compression sweep (ESM Table 13)"]
    assert sweep.loc["4.1x (4.115), KD_IG", "ours"] == "41.00 ± 1.41"
    assert (sweep.drop(index="4.1x (4.115), KD_IG")["ours"] == report.NOT_RUN).all()
    assert rows["4.1x student"]["ours"] == "1.234" and rows["teacher"]["ours"] == report.NOT_RUN
    assert table.attrs["other_students"] == 1 and table.attrs["untagged"] == 1

    page = report.summary_markdown(report.summary_table("ci"), "header line")
    assert "1 student run(s) of this profile record no purpose" in page
    assert "header line" in page and page.count("\n## ") == 8
    assert "| KD_IG | 92.02 ± 0.34 (best 92.58) | 41.00 ± 1.41 | 2 | -51.02 |" in page


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_runs_made_before_purposes_are_tagged_by_the_old_rules(ci_cache, monkeypatch, capsys):
    # as the quick profile: experiment runs of 1 epoch (recipe: 3) on a share of the training set
    ci = profiles.PROFILES["ci"]
    experiments = {**ci.experiments, "experiment_epochs": 1, "experiment_data_share": 0.5}
    student_recipe = {**ci.student_recipe, "epochs": 3}
    narrowed = ci.replace(student_recipe=student_recipe, experiments=experiments)
    monkeypatch.setitem(profiles.PROFILES, "ci", narrowed)
    n = len(pipeline.datasets(narrowed)[0])
    _student("KD", 0, 40.0, n // 2, epochs=1, train_fraction=0.5, split_seed=0)  # the ablation's
    _student("KD", 1, 44.0, n // 2, epochs=1, train_fraction=0.5, split_seed=0)
    _student("KD", 2, 30.0, int(0.4 * n), epochs=1, train_fraction=0.4)  # the Monte Carlo's
    _student("KD", 3, 99.0, n)  # notebook 03's: the recipe's 3 epochs on all images, not counted
    _student("KD", 4, 99.0, n, epochs=1)  # 1 epoch but all images: neither ablation nor MC

    before = report.summary_table("ci")
    assert before.attrs["untagged"] == 5 and "42.00" not in before["ours"].to_string()
    from igkd import cli

    assert cli.main(["runs", "migrate", "--profile", "ci"]) == 0
    assert capsys.readouterr().out == "ci: tagged ablation 2, sweep 2, monte-carlo 1\n"
    assert report.tag_untagged("ci") == {}  # once
    table = report.summary_table("ci").set_index(["section", "what"])
    ablation = table.loc["The eight methods at 4.1x (ten runs each in the paper)"]
    assert ablation.loc["KD", "ours"] == "42.00 ± 2.83" and ablation.loc["KD", "runs"] == 2
    mc = table.loc["Monte Carlo, Train80Rand at 4.1x (60 runs each in the paper)"]
    assert mc.loc["KD", "ours"] == "30.00"
    assert table.attrs["untagged"] == 2  # the 3-epoch run and the all-images one
    page = report.summary_markdown(report.summary_table("ci"))
    assert "students: 1 epoch(s) on 50% of the training set" in page


def test_latency_records_from_both_deployment_tables():
    lat = pd.DataFrame(
        {"b1 median (ms)": [9.0, 3.0], "b1 IQR (ms)": [1.0, 1.0], "b64 median (ms)": [90.0, None]},
        index=["teacher", "4.1x"],
    )
    onnx = pd.DataFrame(
        {"b1 median (ms)": [2.0]}, index=pd.MultiIndex.from_tuples([("4.1x student", "ONNX int8")])
    )
    records = report.latency_records(lat) + report.latency_records(onnx)
    assert records == [
        {
            "model": "teacher",
            "runtime": "pytorch",
            "precision": "fp32",
            "batch": 1,
            "median_ms": 9.0,
        },
        {
            "model": "teacher",
            "runtime": "pytorch",
            "precision": "fp32",
            "batch": 64,
            "median_ms": 90.0,
        },
        {"model": "4.1", "runtime": "pytorch", "precision": "fp32", "batch": 1, "median_ms": 3.0},
        {
            "model": "4.1",
            "runtime": "onnxruntime",
            "precision": "int8",
            "batch": 1,
            "median_ms": 2.0,
        },
    ]  # the NaN batch-64 time of the student is left out


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_imagenet_records_average_the_runs_the_ablation_counts(ci_cache):
    def scores(acc):
        return imagenet.Scores(10, acc, acc - 1, 0.5, {}, 0)

    n = len(pipeline.datasets(profiles.get("ci"))[0])
    _student("KD", 0, 1.0, n, tags=["ablation"])  # the ablation's: counted
    _student("KD", 1, 2.0, n, tags=["ablation", "sweep"])
    _student("KD", 2, 3.0, int(0.8 * n), tags=["monte-carlo"])  # a Monte Carlo draw
    _student("KD", 3, 4.0, n, alpha=0.5, tags=["tuning"])  # a tuning trial
    _student("IG", 0, 5.0, n, profile="quick", tags=["ablation"])  # another profile
    found = runs.find_runs("student")
    run_metrics = {f"s{i}": {**r.metrics, "run": r.path.name} for i, r in enumerate(found)}
    accuracy = {f"s{i}": 10.0 * r.metrics["final_test_accuracy"] for i, r in enumerate(found)}
    result = SimpleNamespace(
        teacher=scores(60.0), students={k: scores(v) for k, v in accuracy.items()}
    )
    records = report.imagenet_records(result, run_metrics, "ci", generated=True)
    assert [(r["model"], r["accuracy"], r["runs"]) for r in records] == [
        ("teacher", 60.0, 1),
        ("KD", 15.0, 2),
    ]
    assert all(r["generated"] for r in records)


def test_save_results_rejects_unknown_names_and_bad_records(ci_cache):
    with pytest.raises(ConfigError, match="speed"):
        report.save_results("speed", [], "ci")
    with pytest.raises(ConfigError, match="list of dicts"):
        report.save_results("latency", {"model": "teacher"}, "ci")


def _executed_book(tmp_path, cells, profile="ci"):
    """A book folder with one 'executed' notebook and its build info."""
    executed = tmp_path / "book" / "executed"
    executed.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["papermill"] = {"parameters": {"profile": profile}, "end_time": "2025-01-01T00:00"}
    nbformat.write(nb, executed / "00_x.ipynb")
    (tmp_path / "notebooks").mkdir()  # the notebooks beside the book: the table of contents
    nbformat.write(nbformat.v4.new_notebook(cells=cells[:1]), tmp_path / "notebooks" / "00_x.ipynb")
    info = {
        "profile": "ci",
        "data": "synthetic",
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 4.0, "gpu": None, "os": "Linux"},
        "environment": profiles.environment("ci"),
        "runs": "runs",
        "notebooks": {"00_x.ipynb": {"seconds": 1.0}},
    }
    (executed / book.INFO_FILE).write_text(json.dumps(info))
    return tmp_path / "book"


def test_prepare_refuses_failed_or_foreign_notebooks(tmp_path):
    with pytest.raises(BookError, match="execute the notebooks first"):
        book.prepare(tmp_path)
    error = nbformat.v4.new_code_cell("1/0")
    error.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="x")]
    title = nbformat.v4.new_markdown_cell("# 00 · X")
    with pytest.raises(BookError, match="ZeroDivisionError"):
        book.prepare(_executed_book(tmp_path / "a", [title, error]))
    with pytest.raises(BookError, match="not executed in this build"):
        book.prepare(_executed_book(tmp_path / "b", [title], profile="quick"))


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_prepare_hides_injected_parameters_and_writes_toc(tmp_path, ci_cache):
    params = nbformat.v4.new_code_cell('profile = "auto"')
    params.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell('profile = "ci"')
    injected.metadata["tags"] = ["injected-parameters"]
    bar = nbformat.v4.new_code_cell("train()")  # tqdm's progress bar, an ipywidget, then a print
    bar.outputs = [
        nbformat.v4.new_output(
            "display_data", {book.WIDGET_VIEW: {"model_id": "m1"}, "text/plain": "100%|###|"}
        ),
        nbformat.v4.new_output("stream", name="stdout", text="done\n"),
    ]
    cells = [nbformat.v4.new_markdown_cell("# 00 · X"), params, injected, bar]
    src = _executed_book(tmp_path, cells)
    nb = nbformat.read(src / "executed" / "00_x.ipynb", as_version=4)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m1": {}}}}
    nbformat.write(nb, src / "executed" / "00_x.ipynb")
    book.prepare(src)
    book.prepare(src)  # twice: one note, not two
    nb = nbformat.read(src / "executed" / "00_x.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags == [[], [book.NOTE_TAG], ["parameters"], ["injected-parameters", "remove-cell"], []]
    assert [o.output_type for o in nb.cells[-1].outputs] == ["stream"], "the widget is removed"
    assert "widgets" not in nb.metadata
    assert "Run with profile ci" in nb.cells[1].source and "`profile='ci'`" in nb.cells[1].source
    assert book.pages(src) == [
        "intro.html",
        "summary.html",
        "executed/00_x.html",
        "differences.html",
        "reproducing.html",
    ]
    assert "# Results" in (src / "summary.md").read_text()


def test_browser_check_finds_missing_images_and_tracebacks(tmp_path):
    """check_site on two hand-written pages: one good, one with every fault it looks for."""
    chromium = book.find_chromium()
    if chromium is None:
        if require_browser():
            pytest.fail("no Chromium found (IGKD_REQUIRE_BROWSER=1): apt-get install chromium")
        pytest.skip("no Chromium here: apt-get install chromium (CI requires it)")
    from PIL import Image

    Image.new("RGB", (4, 3), "red").save(tmp_path / "red.png")
    banner = '<div class="bd-header-announcement">profile ci · data: x</div>'
    good = f'{banner}<article class="bd-article"><h1>Good</h1><img src="red.png"></article>'
    bad = (
        '<article class="bd-article"><h1>Bad</h1><img src="missing.png">'
        "<pre>Traceback (most recent call last):\n  ZeroDivisionError</pre>"
        "<script>undefinedFunction()</script></article>"
    )
    (tmp_path / "good.html").write_text(f"<html><body>{good}</body></html>")
    (tmp_path / "bad.html").write_text(f"<html><body>{bad}</body></html>")
    found = book.check_site(tmp_path, ["good.html", "bad.html"], chromium)
    assert found["good.html"]["images"] == 1 and not found["good.html"]["broken"]
    issues = book.problems(found)
    assert issues[0] == "bad.html: images not shown: missing.png"
    assert issues[1] == "bad.html: shows a Python traceback or an error output"
    assert issues[2] == "bad.html: no banner with the profile, data and machine"
    assert issues[3].startswith("bad.html: JavaScript error ReferenceError: undefinedFunction")
    assert len(issues) == 4


def _tiny_notebook(path, body: str) -> None:
    params = nbformat.v4.new_code_cell('profile = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_resume_after_a_finished_build_keeps_every_notebook(tmp_path, ci_cache):
    """`prepare` adds a note to each executed notebook; resuming must still recognise them."""
    nbs, out, log = tmp_path / "notebooks", tmp_path / "book", tmp_path / "ran.txt"
    nbs.mkdir()
    for name in ("00_a", "01_b"):
        _tiny_notebook(nbs / f"{name}.ipynb", f"open({str(log)!r}, 'a').write('{name} ')")
    book.execute("ci", out, nbs)
    book.prepare(out)
    info = book.execute("ci", out, nbs, resume=True)
    assert log.read_text() == "00_a 01_b "  # nothing ran a second time
    assert set(info["notebooks"]) == {"00_a.ipynb", "01_b.ipynb"}


def test_execute_resume_keeps_finished_notebooks_and_reruns_edited_ones(tmp_path):
    """A killed `make book` continues: finished notebooks stay, an edited or failed one runs again."""
    nbs, out, log = tmp_path / "notebooks", tmp_path / "book", tmp_path / "ran.txt"
    nbs.mkdir()
    for name in ("01_a", "02_b"):
        _tiny_notebook(nbs / f"{name}.ipynb", f"open({str(log)!r}, 'a').write('{name} ' + profile)")
    book.execute("ci", out, nbs)
    assert log.read_text() == "01_a ci02_b ci"

    _tiny_notebook(nbs / "02_b.ipynb", f"open({str(log)!r}, 'a').write(' 02_b edited')")
    info = book.execute("ci", out, nbs, resume=True)
    assert log.read_text() == "01_a ci02_b ci 02_b edited"  # 01_a kept, 02_b ran again
    assert set(info["notebooks"]) == {"01_a.ipynb", "02_b.ipynb"}
    assert info["notebooks"]["01_a.ipynb"]["seconds"] > 0

    executed = out / "executed" / "01_a.ipynb"
    assert book._reusable(executed, nbs / "01_a.ipynb", "ci") is not None
    assert book._reusable(executed, nbs / "01_a.ipynb", "quick") is None  # another profile
    book.execute("ci", out, nbs)  # without resume everything runs again
    assert log.read_text().endswith(" 02_b edited01_a ci 02_b edited")


def test_jobs_run_notebooks_side_by_side_and_stop_after_a_failure(tmp_path):
    """`jobs=2`: two chapters run at once (each waits to see the other's mark); after one fails, no
    later chapter starts, the failure is raised, and the one that finished beside it is kept."""
    nbs, out = tmp_path / "notebooks", tmp_path / "book"
    nbs.mkdir()
    wait_for = (
        "import os, pathlib, time\n"
        "assert os.environ['IGKD_MODELS_USED'].endswith('_models_used.txt')\n"
        "pathlib.Path({me!r}).touch()\n"
        "t = time.time()\n"
        "while not pathlib.Path({other!r}).exists():\n"
        "    assert time.time() - t < 60, 'the other notebook never ran alongside'\n"
        "    time.sleep(0.1)\n"
    )
    a, b = str(tmp_path / "a.mark"), str(tmp_path / "b.mark")
    _tiny_notebook(nbs / "01_a.ipynb", wait_for.format(me=a, other=b))
    _tiny_notebook(nbs / "02_b.ipynb", wait_for.format(me=b, other=a))
    info = book.execute("ci", out, nbs, jobs=2)
    assert list(info["notebooks"]) == ["01_a.ipynb", "02_b.ipynb"]
    # Both kernels append the models they read to the build's record (igkd runs export --lean).
    record = out / "executed" / book.MODELS_USED
    assert record.is_file() and os.environ.get("IGKD_MODELS_USED") != str(record.resolve())

    # 01_a fails; 02_b, beside it, ends only once 01_a's failure is written; 03_c must not start.
    log, executed_a = tmp_path / "ran.txt", out / "executed" / "01_a.ipynb"
    _tiny_notebook(nbs / "01_a.ipynb", "raise ValueError('chapter a broke')")
    _tiny_notebook(
        nbs / "02_b.ipynb",
        "import pathlib, time\n"
        "t = time.time()\n"
        f"while 'chapter a broke' not in pathlib.Path({str(executed_a)!r}).read_text():\n"
        "    assert time.time() - t < 60\n"
        "    time.sleep(0.1)\n"
        "time.sleep(1)\n",
    )
    _tiny_notebook(nbs / "03_c.ipynb", f"open({str(log)!r}, 'a').write('03_c')")
    with pytest.raises(Exception, match="chapter a broke"):
        book.execute("ci", out, nbs, jobs=2)
    assert not log.exists()  # nothing starts after a failure
    assert book._reusable(out / "executed" / "02_b.ipynb", nbs / "02_b.ipynb", "ci") is not None
    with pytest.raises(BookError, match="jobs=0"):
        book.execute("ci", out, nbs, jobs=0)


def test_resume_reruns_every_notebook_when_the_precision_or_teacher_changed(tmp_path, monkeypatch):
    nbs, out, log = tmp_path / "notebooks", tmp_path / "book", tmp_path / "ran.txt"
    nbs.mkdir()
    _tiny_notebook(nbs / "01_a.ipynb", f"open({str(log)!r}, 'a').write('ran ')")
    monkeypatch.delenv("IGKD_PRECISION", raising=False)
    book.execute("ci", out, nbs)
    book.execute("ci", out, nbs, resume=True)
    assert log.read_text() == "ran "  # same settings: kept
    # Not a fixed bf16: "auto" resolves to bf16 on CPUs that have it (Xeon with AMX), and then
    # the setting did not change.
    import torch

    from igkd import train

    auto = train.resolve_precision("auto", torch.device("cpu"))
    monkeypatch.setenv("IGKD_PRECISION", "fp32" if auto == "bf16" else "bf16")
    book.execute("ci", out, nbs, resume=True)
    assert log.read_text() == "ran ran "  # other precision: executed again


# --- the committed table of contents, and a book built without `make book` -------------------------


def test_committed_toc_has_one_chapter_per_notebook():
    """book/_toc.yml is committed; `prepare` rewrites it from notebooks/, so they must agree (a new
    notebook needs `python -m igkd.book toc`)."""
    assert (book.BOOK_DIR / "_toc.yml").read_text() == book.toc_text(book.NOTEBOOKS_DIR)
    assert book.toc_chapters(book.BOOK_DIR) == [p.name for p in book.notebooks()]


def _archive(path, manifest: dict, extra: dict[str, bytes] | None = None):
    """A .tar.gz whose first member is manifest.json, then `extra` {name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {"manifest.json": json.dumps(manifest).encode(), **(extra or {})}.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


MANIFEST = {
    "format": "igkd-runs",
    "created": "2025-03-04T05:06:07+00:00",
    "git_revision": "abc1234",
    "machine": {"cpu": "Big CPU", "cores": 64, "memory_gb": 512, "gpu": "H200", "os": "Linux"},
    "profile": "quick",
    "note": "a note",
    "runs": [{"kind": "teacher"}, {"kind": "student"}],
}


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_book_without_executed_notebooks_then_make_book(tmp_path, ci_cache):
    """Built as typed on a fresh clone, the book holds the notebooks unexecuted and says so;
    executing them (with a results archive named) replaces every stand-in."""
    nbs, src = tmp_path / "notebooks", tmp_path / "book"
    nbs.mkdir()
    src.mkdir()
    for name in ("00_a", "01_b"):
        _tiny_notebook(nbs / f"{name}.ipynb", "print(profile)")
    book.write_toc(src)
    assert book.toc_chapters(src) == ["00_a.ipynb", "01_b.ipynb"]

    state = book.materialise(src)
    assert state == {"info": None, "not_executed": ["00_a.ipynb", "01_b.ipynb"], "left": [],
                     "archive": None, "refused": None}  # fmt: skip
    copy = nbformat.read(src / "executed" / "00_a.ipynb", as_version=4)
    assert copy.metadata[book.NOT_EXECUTED] and not any(c.get("outputs") for c in copy.cells)
    assert "Not executed" in copy.cells[0].source and book.NOTE_TAG in copy.cells[0].metadata.tags
    assert "No runs here" in (src / "summary.md").read_text()
    assert book.banner(state).startswith("These chapters are not executed: run `make book")
    mtime = (src / "executed" / "00_a.ipynb").stat().st_mtime_ns
    assert book.materialise(src)["not_executed"] == ["00_a.ipynb", "01_b.ipynb"]
    assert (src / "executed" / "00_a.ipynb").stat().st_mtime_ns == mtime, "not rewritten"
    with pytest.raises(BookError, match="execute the notebooks first"):
        book.prepare(src)  # stand-ins are no build
    (src / "executed" / "01_b.ipynb").write_text("{")  # cut short by a kill: replaced
    shutil.copy(nbs / "00_a.ipynb", src / "executed" / "00_a.ipynb")  # as if run by a killed build
    state = book.materialise(src)
    assert state["left"] == ["00_a.ipynb"] and state["not_executed"] == ["01_b.ipynb"]
    assert "(1 ran in an unfinished `make book`: `RESUME=1` keeps those.)" in book.banner(state)

    archive = _archive(tmp_path / "runs.tar.gz", MANIFEST)
    info = book.execute("ci", src, nbs, results=archive)
    book.prepare(src)
    assert info["results"]["archive"] == "runs.tar.gz"
    assert info["results"]["runs"] == 2, "the number of runs, not the manifest's list of files"
    for name in ("00_a.ipynb", "01_b.ipynb"):
        nb = nbformat.read(src / "executed" / name, as_version=4)
        assert book.NOT_EXECUTED not in nb.metadata and nb.cells[-1].outputs, name
    state = book.materialise(src)
    assert state["info"] is not None and state["not_executed"] == [] and state["left"] == []
    text = book.banner(state)
    assert text.startswith("Notebooks executed with profile ci")
    assert (
        "runs imported from the archive runs.tar.gz (made 2025-03-04 on Big CPU, 64 cores" in text
    )
    assert "H200, git abc1234, profile quick)" in text
    assert "# Results" in (src / "summary.md").read_text(), "prepare's summary is kept"

    _tiny_notebook(nbs / "02_c.ipynb", "print(profile)")  # a chapter added since the build
    book.write_toc(src)
    state = book.materialise(src)
    assert state["info"] is not None and state["not_executed"] == ["02_c.ipynb"]
    assert "Not executed: 02_c;" in book.banner(state)


def _results_archive(repo, files: dict[str, bytes], name="paper.tar.gz"):
    """`<repo>/results/<name>` as `igkd runs export --book` writes it: a hand-made finished run and
    an executed book of `files` {name in executed/, or summary.md: bytes}."""
    run = repo / "runs" / "teacher" / "abc"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text('{"config": {}}')
    (run / "DONE").write_text("")
    made = repo / "elsewhere" / "book"
    (made / "executed").mkdir(parents=True, exist_ok=True)
    for n, data in files.items():
        (made / ("" if n == "summary.md" else "executed") / n).write_bytes(data)
    (repo / "results").mkdir(exist_ok=True)
    out = repo / "results" / name
    archive.export_runs(out, runs_dir=repo / "runs", book=made / "executed")
    return out


def _book_with_an_archive(tmp_path):
    """A book of one chapter, built once without executed notebooks, and a results archive of
    that chapter executed in the paper profile."""
    nbs, src = tmp_path / "notebooks", tmp_path / "book"
    nbs.mkdir()
    src.mkdir()
    _tiny_notebook(nbs / "00_a.ipynb", "print(profile)")
    book.write_toc(src)
    assert book.materialise(src)["not_executed"] == ["00_a.ipynb"]  # a first build, no archive
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · A")])
    info = {
        "profile": "paper",
        "data": "CIFAR-10",
        "machine": MANIFEST["machine"],
        "environment": {**profiles.environment("ci"), "threads": 8},
        "notebooks": {"00_a.ipynb": {"seconds": 1.0}},
    }
    found = _results_archive(tmp_path, {
        "00_a.ipynb": nbformat.writes(executed).encode(),
        book.INFO_FILE: json.dumps(info).encode(),
        "summary.md": b"# Results from the archive\n",
    })  # fmt: skip
    return src, found


def test_book_from_a_results_archive(tmp_path):
    """Without executed notebooks, a results archive's executed chapters are unpacked (over the
    stand-ins of an earlier build)."""
    src, _ = _book_with_an_archive(tmp_path)
    state = book.materialise(src)
    assert state["archive"] == "paper.tar.gz" and state["info"]["profile"] == "paper"
    assert state["not_executed"] == [] and state["left"] == [] and state["refused"] is None
    assert book.banner(state).startswith("Notebooks executed with profile paper")
    assert "unpacked from results/paper.tar.gz, not executed by this build" in book.banner(state)
    assert (src / "summary.md").read_text() == "# Results from the archive\n"
    assert (
        nbformat.read(src / "executed" / "00_a.ipynb", as_version=4).cells[0].source == "# 00 · A"
    )


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_book_refuses_a_damaged_results_archive(tmp_path, capsys, damage):
    """A results archive that fails verification is not used at all: one line names it, the
    chapters are copied unexecuted, and the banner says the archive was refused."""
    import gzip

    src, found = _book_with_an_archive(tmp_path)
    raw = found.read_bytes()
    if damage == "tampered":  # the same size, one notebook's title changed
        tar = gzip.decompress(raw)
        assert tar.count("# 00 · A".encode()) == 1
        found.write_bytes(gzip.compress(tar.replace("# 00 · A".encode(), "# 00 · Z".encode())))
    else:
        found.write_bytes(raw[: len(raw) - 100])
    capsys.readouterr()
    state = book.materialise(src)
    assert state["refused"] == "paper.tar.gz" and state["archive"] is None
    assert state["info"] is None and state["not_executed"] == ["00_a.ipynb"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "paper.tar.gz refused, not used" in err
    assert ("altered or damaged" if damage == "tampered" else "truncated") in err
    assert book.banner(state).startswith("These chapters are not executed: run `make book")
    assert "The results archive paper.tar.gz was refused" in book.banner(state)
    assert book._is_placeholder(src / "executed" / "00_a.ipynb")
    assert not (src / "executed" / book.INFO_FILE).exists()
    assert "No runs here" in (src / "summary.md").read_text()
    assert not [p for p in src.rglob(".*") if p.is_file()], "no temp files left"


def test_read_manifest_reads_the_first_member_only(tmp_path):
    assert book.read_manifest(_archive(tmp_path / "a.tar.gz", MANIFEST)) == MANIFEST
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tar:
        tar.add(_archive(tmp_path / "a.tar.gz", MANIFEST), "other.tar.gz")
    with pytest.raises(BookError, match="first member is not manifest.json"):
        book.read_manifest(tmp_path / "b.tar.gz")
    (tmp_path / "c.tar.gz").write_text("not a tar")
    with pytest.raises(BookError, match="not a run-cache archive"):
        book.read_manifest(tmp_path / "c.tar.gz")


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_ablation_runs_of_an_earlier_protocol_at_the_same_size_are_not_counted(
    ci_cache, monkeypatch
):
    # As quick's move from 1 epoch on 20 % to 20 epochs on 5 %, both at 4.1x: the earlier arms
    # keep their "ablation" tag, but the summary counts only runs of the current settings.
    ci = profiles.PROFILES["ci"]
    moved = ci.replace(
        experiments={
            **ci.experiments,
            "regimes": (*ci.experiments["regimes"], profiles.Regime("4.1x-half", "4.1", 0.5, 1)),
            "ablation_regime": "4.1x-half",
        }
    )
    monkeypatch.setitem(profiles.PROFILES, "ci", moved)
    n = len(pipeline.datasets(moved)[0])
    _student("KD_IG", 0, 30.0, n // 2, tags=["ablation"])  # the current protocol: half the data
    _student("KD_IG", 1, 32.0, n // 2, tags=["ablation"])
    _student("KD_IG", 2, 99.0, n, tags=["ablation"])  # the earlier protocol: all of it
    table = report.summary_table("ci")
    rows = table[table["section"].str.startswith("The eight methods")].set_index("what")
    assert rows.loc["KD_IG", "ours"] == "31.00 ± 1.41"
    counted = report.students_of(report.collect("ci"), "KD_IG", "4.1", "ablation")
    assert sorted(m["final_test_accuracy"] for m in counted) == [30.0, 32.0]


@pytest.mark.filterwarnings("ignore:.*synthetic data")
def test_the_summary_counts_the_ablation_at_the_profiles_ablation_regime(ci_cache, monkeypatch):
    # As quick's: the ablation trains the 140x student (chapter 11's choice), the rest at 4.1x.
    ci = profiles.PROFILES["ci"]
    moved = ci.replace(experiments={**ci.experiments, "ablation_regime": "140x-1ep"})
    monkeypatch.setitem(profiles.PROFILES, "ci", moved)
    n = len(pipeline.datasets(moved)[0])
    for seed, acc in ((0, 30.0), (1, 32.0)):
        _student("KD_IG", seed, acc, n, tags=["ablation"], compression="140")
    _student("KD_IG", 2, 99.0, n, tags=["ablation"])  # a 4.1x run: not the ablation's size
    table = report.summary_table("ci")
    section = "The eight methods at 4.1x (ten runs each in the paper); ours at 140x, the "
    rows = table[table["section"] == section + "profile's ablation regime"].set_index("what")
    assert rows.loc["KD_IG", "ours"] == "31.00 ± 1.41"
    assert rows.loc["KD_IG", "difference (pp)"] is None  # no paper number at 140x to subtract
    assert (
        table.attrs["students"]
        == "1 epoch(s) on all training images; the ablation: 140x, 1 epoch(s) on all training images"
    )
    text = report.conclusions_markdown(table)
    assert "Ablation at 140x (the paper's ablation: 4.1x)" in text
