"""`igkd runs export/import`: archives of finished runs that are verified, then merged safely."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_ci_profile

from igkd import archive, cli, ig_store, paths, pipeline, runs
from igkd.errors import ArchiveError, CheckpointError

REV = "0123456789abcdef0123456789abcdef01234567"


def make_runs(root: Path, mp: pytest.MonkeyPatch, profile: str = "ci", students: int = 2) -> dict:
    """Hand-made finished runs in `root`: a teacher, an IG store of it and `students` students,
    each with a checkpoint, history, model.pt (the IG store: maps.npy) and metrics."""
    mp.setenv("IGKD_RUNS", str(root))
    env = {"profile": profile, "seed": 0}

    def fn(metrics: dict, artefact: str = "model.pt") -> Callable[[runs.Run], dict]:
        def compute(run: runs.Run) -> dict:
            run.save_checkpoint({"epoch": 1})
            run.append_history({"epoch": 1, "loss": 0.5})
            if artefact == "model.pt":
                run.save_torch("model.pt", {"w": torch.arange(4.0)})
            else:  # an IG store's maps: (300, 4, 4) float16, random
                maps = np.random.default_rng(0).random((300, 4, 4)).astype(np.float16)
                buf = io.BytesIO()
                np.save(buf, maps)
                paths.atomic_write_bytes(run.path / artefact, buf.getvalue())
            return metrics

        return compute

    made = {"teacher": runs.get_or_run("teacher", {"p": profile}, fn({"environment": env}))}
    made["ig"] = runs.get_or_run(
        archive.IG_KIND, {"teacher_run": made["teacher"].path.name}, fn({"n": 1}, "maps.npy")
    )
    for i in range(students):
        metrics = {"method": "KD_IG", "compression": "4.1", "final_test_accuracy": 50.0 + i}
        made[f"student{i}"] = runs.get_or_run(
            "student",
            {"p": profile, "seed": i, "ig_run": made["ig"].path.name},
            fn({**metrics, "environment": env}),
        )
    return made


def runs_in(root: Path) -> list[Path]:
    """The run directories under `root`: `<kind>/<hash>`, hidden (staging) folders left out."""
    return sorted(p for p in root.glob("[!.]*/[!.]*") if p.is_dir())


def rebuild(src: Path, dst: Path, edit: Callable[[str, bytes], bytes], extra=()) -> Path:
    """Copy the archive `src` to `dst` with each member's data passed through `edit(name, data)`,
    then `extra` (TarInfo, bytes) members appended."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin.getmembers():
            data = edit(m.name, tin.extractfile(m).read())
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
        for info, data in extra:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    made = make_runs(tmp_path / "a", monkeypatch)
    out = tmp_path / "runs.tar.gz"
    archive.export_runs(out, ig=True, runs_dir=tmp_path / "a")
    return out, made


def test_ig_kind_is_the_store_kind() -> None:
    assert archive.IG_KIND == ig_store.STORE_KIND
    assert archive.SAMPLE_KIND == ig_store.SAMPLE_KIND


# --- 1. round trip with real runs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real teacher, IG store and KD_IG student of a tiny ci profile, in their own runs dir."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("archive")
    mp.setenv("IGKD_RUNS", str(root / "a"))
    mp.setenv("IGKD_DATA", str(root / "no-data"))
    with tiny_ci_profile(mp, train_size=64, ig_n_steps=2) as name:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # synthetic data
            student = pipeline.student_run(4.1, "KD_IG", profile=name, progress=False)
        yield root, student
    mp.undo()


def test_round_trip_reproduces_the_runs_and_hits_the_cache(tiny, monkeypatch) -> None:
    root, student = tiny
    a, b, out = root / "a", root / "b", root / "all.tar.gz"
    manifest = archive.export_runs(out, ig=True, runs_dir=a, note="round trip")
    assert [r["kind"] for r in manifest["runs"]] == ["teacher", "ig_maps", "student"]
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and not any(n.endswith("checkpoint.pt") for n in names)

    report = archive.import_runs(out, runs_dir=b)
    assert len(report.imported) == 3 and report.skipped_existing == []
    for src in runs_in(a):
        dst = b / src.parent.name / src.name
        assert (dst / "DONE").is_file() and (dst / "imported.json").is_file()
        assert not (dst / "checkpoint.pt").exists() and not (dst / "LOCK").exists()
        for f in src.iterdir():
            if f.name not in ("checkpoint.pt", "LOCK"):
                assert (dst / f.name).read_bytes() == f.read_bytes(), f
        assert json.loads((dst / "metrics.json").read_text()) == runs.open_run(src).metrics

    monkeypatch.setenv("IGKD_RUNS", str(b))

    def boom(run: runs.Run) -> dict:
        raise AssertionError("recomputed an imported run")

    again = runs.get_or_run("student", student.config, boom)
    assert again.path == b / "student" / student.path.name and not again.computed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        same = pipeline.student_run(4.1, "KD_IG", profile="ci", progress=False)
    assert same.path == again.path and not same.computed
    assert archive.provenance(same.path)["imported_from"] == "all.tar.gz"


# --- 2., 3., 7. what import refuses ----------------------------------------------------------------


def test_tampered_member_is_refused_by_name(exported, tmp_path) -> None:
    out, made = exported
    target = f"student/{made['student1'].path.name}/model.pt"

    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1]) if name == target else data

    bad = rebuild(out, tmp_path / "bad.tar.gz", flip)
    with pytest.raises(ArchiveError, match=f"{target}.*SHA-256.*altered"):
        archive.import_runs(bad, runs_dir=tmp_path / "b")
    assert runs_in(tmp_path / "b") == []


def test_truncated_archive_is_refused(exported, tmp_path) -> None:
    out, _ = exported
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="truncated"):
        archive.import_runs(cut, runs_dir=tmp_path / "b")
    assert runs_in(tmp_path / "b") == []


def test_newer_schema_is_refused(exported, tmp_path) -> None:
    out, _ = exported

    def schema99(name: str, data: bytes) -> bytes:
        return (
            json.dumps({**json.loads(data), "schema": 99}).encode()
            if name == "manifest.json"
            else data
        )

    with pytest.raises(ArchiveError, match="schema 99.*upgrade igkd"):
        archive.import_runs(
            rebuild(out, tmp_path / "new.tar.gz", schema99), runs_dir=tmp_path / "b"
        )
    assert runs_in(tmp_path / "b") == []


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../evil", tarfile.REGTYPE, "unsafe path"),
        ("/etc/evil", tarfile.REGTYPE, "unsafe path"),
        ("teacher/x/link", tarfile.SYMTYPE, "not a regular file"),
        ("teacher/x/extra", tarfile.REGTYPE, "not listed"),
    ],
)
def test_escaping_links_and_unlisted_members_are_refused(exported, tmp_path, name, kind, message):
    out, _ = exported
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, 0 if kind != tarfile.REGTYPE else 3
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    bad = rebuild(out, tmp_path / "bad.tar.gz", lambda n, d: d, [(info, b"bad"[: info.size])])
    with pytest.raises(ArchiveError, match=message):
        archive.import_runs(bad, runs_dir=tmp_path / "b")
    assert not (tmp_path / "evil").exists() and runs_in(tmp_path / "b") == []


def test_manifest_with_escaping_file_name_is_refused(exported, tmp_path) -> None:
    out, _ = exported

    def escape(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        m = json.loads(data)
        m["runs"][0]["files"]["../../evil"] = {"sha256": "0" * 64, "bytes": 0}
        return json.dumps(m).encode()

    with pytest.raises(ArchiveError, match="malformed"):
        archive.import_runs(rebuild(out, tmp_path / "bad.tar.gz", escape), runs_dir=tmp_path / "b")


def test_missing_archive_and_wrong_first_member(tmp_path) -> None:
    with pytest.raises(ArchiveError, match="does not exist"):
        archive.import_runs(tmp_path / "nope.tar.gz", runs_dir=tmp_path / "b")
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("README"), io.BytesIO(b""))
    with pytest.raises(ArchiveError, match="not manifest.json"):
        archive.import_runs(plain, runs_dir=tmp_path / "b")


# --- 4. import overwrites nothing ---------------------------------------------------------------


def test_import_overwrites_nothing(exported, tmp_path) -> None:
    out, made = exported
    b = tmp_path / "b"
    mine = b / "student" / made["student0"].path.name
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    (mine / "metrics.json").write_text('{"mine": true}')
    (mine / "DONE").write_text("")
    busy = b / "student" / made["student1"].path.name  # being computed here: no DONE yet
    busy.mkdir()
    (busy / "LOCK").write_text("")

    report = archive.import_runs(out, runs_dir=b)
    assert report.skipped_existing == [mine] and report.unfinished_existing == [busy]
    assert len(report.imported) == 2  # teacher and IG store
    assert json.loads((mine / "metrics.json").read_text()) == {"mine": True}
    assert sorted(p.name for p in busy.iterdir()) == ["LOCK"]
    again = archive.import_runs(out, runs_dir=b)
    assert again.imported == [] and len(again.skipped_existing) == 3


# --- 5. runs of another revision -----------------------------------------------------------------


def test_provenance_of_runs_from_another_revision(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(paths, "git_revision", lambda: REV)
    made = make_runs(tmp_path / "a", monkeypatch, students=1)
    monkeypatch.setattr(paths, "git_revision", lambda: None)  # this checkout: none known
    out = tmp_path / "theirs.tar.gz"
    manifest = archive.export_runs(out, runs_dir=tmp_path / "a")
    assert manifest["git_revision"] is None and "cpu" in manifest["machine"]
    report = archive.import_runs(out, runs_dir=tmp_path / "b")
    # the IG store's sample was made by the exporting checkout (revision None here): left out
    report.imported = [r for r in report.imported if r.parent.name != archive.SAMPLE_KIND]
    for run in report.imported:
        p = archive.provenance(run)
        assert p["git_revision"] == REV and p["imported_from"] == "theirs.tar.gz"
        assert p["exported"] == manifest["created"] and p["machine"] == manifest["machine"]
    assert archive.revisions(report.imported) == ["0123456"]
    assert archive.provenance(made["teacher"])["imported_from"] is None  # a local run
    # the summary page names the revision that computed the numbers and the archive they came from
    from igkd import report as summary

    text = summary.provenance(list(report.imported))
    assert "`0123456`" in text and "imported from `theirs.tar.gz`" in text
    assert summary.provenance([]) == ""


# --- 6. a kill during import -------------------------------------------------------------------


def test_killed_import_leaves_complete_runs_only(exported, tmp_path) -> None:
    out, _ = exported
    b = tmp_path / "b"
    # SIGKILL itself at the second rename: one run is in place, the others staged.
    script = textwrap.dedent(
        f"""
        import os, signal
        from igkd import archive
        rename, calls = os.rename, []
        def dying(src, dst):
            calls.append(src)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            rename(src, dst)
        os.rename = dying
        archive.import_runs({str(out)!r}, runs_dir={str(b)!r})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=paths.REPO_ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()
    placed = runs_in(b)
    assert len(placed) == 1 and all((p / "DONE").is_file() for p in placed)
    assert list(b.glob(".import-*"))  # the staging area of the killed import

    report = archive.import_runs(out, runs_dir=b)
    assert len(report.imported) == 3 and report.skipped_existing == placed
    assert not list(b.glob(".import-*"))
    assert all((p / "DONE").is_file() for p in runs_in(b)) and len(runs_in(b)) == 4


# --- 7. what export writes ------------------------------------------------------------------------


def test_metrics_only_profile_and_kind_filters(tmp_path, monkeypatch) -> None:
    made = make_runs(tmp_path / "a", monkeypatch, "ci", students=1)
    make_runs(tmp_path / "a", monkeypatch, "quick", students=2)
    a = tmp_path / "a"

    m = archive.export_runs(tmp_path / "m.tar.gz", models=False, runs_dir=a)
    kinds = {r["kind"] for r in m["runs"]}
    assert m["metrics_only"] and kinds == {"teacher", "ig_sample", "student"}
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        names = tar.getnames()
    assert not any(n.endswith(("model.pt", "checkpoint.pt")) for n in names)
    assert not any(n.startswith("ig_maps/") for n in names)  # the stores go as samples
    for r in m["runs"]:
        extra = {"maps.npy"} if r["kind"] == "ig_sample" else set()
        assert set(r["files"]) <= set(archive.META_FILES) | extra
    samples = [r for r in m["runs"] if r["kind"] == "ig_sample"]
    assert len(samples) == 2 and all(r["files"]["maps.npy"]["bytes"] < 300 * 32 for r in samples)

    ci = archive.export_runs(tmp_path / "ci.tar.gz", profile="ci", ig=True, runs_dir=a)
    assert {r["profile"] for r in ci["runs"]} == {"ci"}
    assert sorted(r["kind"] for r in ci["runs"]) == ["ig_maps", "student", "teacher"]
    assert any(r["hash"] == made["ig"].path.name for r in ci["runs"])
    only = archive.export_runs(
        tmp_path / "s.tar.gz", profile="quick", kinds=["student"], runs_dir=a
    )
    assert [r["kind"] for r in only["runs"]] == ["student", "student"]
    with pytest.raises(ArchiveError, match="no finished runs of profile paper"):
        archive.export_runs(tmp_path / "p.tar.gz", profile="paper", runs_dir=a)
    assert not (tmp_path / "p.tar.gz").exists() and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ArchiveError, match="exclude each other"):
        archive.export_runs(tmp_path / "x.tar.gz", models=False, ig=True, runs_dir=a)


# --- 8. the command line ------------------------------------------------------------------------


def test_cli_export_import_list(tmp_path, monkeypatch, capsys) -> None:
    make_runs(tmp_path / "a", monkeypatch, students=2)
    out = tmp_path / "x.tar.gz"
    assert cli.main(["runs", "export", str(out), "--runs", str(tmp_path / "a"), "--ig"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        "exported 4 runs (teacher 1, ig_maps 1, student 2) to"
    ) and line.endswith("KiB")
    assert cli.main(["runs", "import", str(out), "--runs", str(tmp_path / "b")]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"imported 4 runs, 0 already present, into {tmp_path / 'b'}"
    )
    assert cli.main(["runs", "list", "--runs", str(tmp_path / "b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "KD_IG 4.1x" in lines[-1] and lines[-1].endswith("x.tar.gz")

    assert cli.main(["runs", "import", str(tmp_path / "missing.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("igkd: error:") and "missing.tar.gz" in err and err.count("\n") == 1


def test_imported_students_need_no_teacher_nor_ig_maps(tiny, monkeypatch) -> None:
    """A metrics-only archive of students alone: notebooks and sweeps read them back without
    training the teacher or computing the IG maps they were made with."""
    from igkd import sweep

    root, student = tiny
    out, c = root / "students.tar.gz", root / "c"
    archive.export_runs(out, kinds=["student"], models=False, runs_dir=root / "a")
    archive.import_runs(out, runs_dir=c)
    monkeypatch.setenv("IGKD_RUNS", str(c))

    def boom(*args, **kwargs):
        raise AssertionError("trained or computed a prerequisite of an imported student")

    monkeypatch.setattr(pipeline, "teacher_run", boom)
    monkeypatch.setattr(pipeline, "precompute_ig", boom)
    config = {"compression": 4.1, "method": "KD_IG", "profile": "ci", "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        same = pipeline.student_run(**config)
        assert same.path.name == student.path.name and not same.computed
        assert sweep.prerequisites(sweep.validate([config])) == {}
        assert sweep.prerequisites(sweep.validate([{**config, "seed": 1}])) != {}
    # Its model stayed behind: loading it says so and how to get one.
    with pytest.raises(
        CheckpointError, match=r"came from students.tar.gz, which carried its metrics only; delete"
    ):
        pipeline.load_model(same)


def test_lean_archive_carries_a_sample_of_the_ig_store(tiny, monkeypatch) -> None:
    """Without --ig the store goes as a sample of its maps; chapter 02 shows them on the other side
    without training the teacher or computing IG, and `sample_ok=False` asks for the store."""
    root, student = tiny
    out, d = root / "lean.tar.gz", root / "d"
    manifest = archive.export_runs(out, runs_dir=root / "a")
    assert [r["kind"] for r in manifest["runs"]] == ["teacher", "ig_sample", "student"]
    archive.import_runs(out, runs_dir=d)
    monkeypatch.setenv("IGKD_RUNS", str(d))

    def boom(*args, **kwargs):
        raise AssertionError("trained or computed for a figure the archive can serve")

    monkeypatch.setattr(pipeline, "precompute_ig", boom)
    profile = student.metrics["environment"]["profile"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # synthetic data
        run, maps, rows = pipeline.ig_maps_for_figures(profile)
        assert run.kind == "ig_sample" and archive.provenance(run)["imported_from"] == "lean.tar.gz"
        store = next((root / "a" / "ig_maps").iterdir())
        full = np.load(store / "maps.npy")
        assert maps.shape == (min(ig_store.SAMPLE_SIZE, len(full)), 32, 32)
        assert np.array_equal(maps, full[rows]) and rows.tolist() == run.metrics["rows"]
        # spread from the first image to the last, so a copy stored class by class shows them all
        assert rows[0] == 0 and rows[-1] == len(full) - 1 and (np.diff(rows) > 0).all()
        assert run.metrics["store"] == store.name
        with pytest.raises(AssertionError, match="computed for a figure"):
            pipeline.ig_maps_for_figures(profile, sample_ok=False)


def test_a_sample_spreads_over_a_copy_stored_class_by_class() -> None:
    rows = ig_store.sample_rows(50_000)
    labels = np.repeat(np.arange(10), 5_000)  # the JPEG copy's order: 5,000 of each class in turn
    assert len(np.unique(rows)) == ig_store.SAMPLE_SIZE and set(labels[rows]) == set(range(10))
    assert (
        ig_store.sample_rows(10).tolist() == list(range(10)) and len(ig_store.sample_rows(0)) == 0
    )


# --- 9. the executed book travels in the archive -------------------------------------------------


def executed_book(folder: Path, failed: str | None = None) -> Path:
    """`folder/executed` as `igkd.book.execute` leaves it (two tiny executed notebooks and the build
    info) and `folder/summary.md` as `prepare` writes it; the notebook `failed` failed."""
    import nbformat

    from igkd import book

    executed = folder / "executed"
    executed.mkdir(parents=True)
    for name in ("00_a.ipynb", "01_b.ipynb"):
        cell = nbformat.v4.new_code_cell("print(profile)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ci\n")]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}"), cell])
        nb.metadata["papermill"] = {"parameters": {"profile": "ci"}, "exception": name == failed}
        nbformat.write(nb, executed / name)
    info = {
        "profile": "ci",
        "notebooks": {n: {"seconds": 1.0} for n in ("00_a.ipynb", "01_b.ipynb")},
    }
    (executed / book.INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (folder / "summary.md").write_text("# Results\n")
    return executed


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_book_names_agree() -> None:
    from igkd import book

    assert archive.INFO_FILE == book.INFO_FILE and archive.SUMMARY in book.GENERATED
    assert archive.MODELS_USED == book.MODELS_USED


def test_book_round_trip_and_schema(tmp_path, monkeypatch, capsys) -> None:
    make_runs(tmp_path / "a", monkeypatch, students=1)
    src = executed_book(tmp_path / "book")
    out = tmp_path / "x.tar.gz"
    args = ["runs", "export", str(out), "--runs", str(tmp_path / "a"), "--book", str(src)]
    assert cli.main(args) == 0
    assert "runs (teacher 1, ig_sample 1, student 1) and the executed book (2 notebooks) to" in (
        capsys.readouterr().out
    )
    manifest = archive._read(out)
    assert manifest["schema"] == 2
    assert sorted(manifest["book"]) == [
        "00_a.ipynb",
        "01_b.ipynb",
        "_build_info.json",
        "summary.md",
    ]
    with tarfile.open(out) as tar:
        names = [n for n in tar.getnames() if n.startswith("executed/")]
    assert sorted(names) == [f"executed/{n}" for n in sorted(manifest["book"])]
    assert names[-1] == "executed/_build_info.json", "written last, so extracted last"
    plain = archive.export_runs(tmp_path / "plain.tar.gz", runs_dir=tmp_path / "a")
    assert plain["schema"] == 1 and "book" not in plain, "schema 2 only with a book"
    with pytest.raises(ArchiveError, match="carries no executed book"):
        archive.extract_book(tmp_path / "plain.tar.gz", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    written = archive.extract_book(out, tmp_path / "c")
    assert sorted(written) == sorted(
        [tmp_path / "c" / "summary.md"]
        + [
            tmp_path / "c" / "executed" / n
            for n in ("00_a.ipynb", "01_b.ipynb", "_build_info.json")
        ]
    )
    assert files_under(tmp_path / "c") == files_under(tmp_path / "book"), "byte-identical"
    report = archive.import_runs(out, runs_dir=tmp_path / "r")  # the book is not a run
    assert len(report.imported) == 3 and sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        ".import.lock",
        "ig_sample",
        "student",
        "teacher",
    ]


@pytest.mark.parametrize("damage", ["tamper", "truncate", "schema 1", "unlisted"])
def test_damaged_book_is_refused_and_nothing_is_written(tmp_path, monkeypatch, damage) -> None:
    make_runs(tmp_path / "a", monkeypatch, students=1)
    out = tmp_path / "x.tar.gz"
    archive.export_runs(out, runs_dir=tmp_path / "a", book=executed_book(tmp_path / "book"))

    def edit(name: str, data: bytes) -> bytes:
        if damage == "tamper" and name == "executed/01_b.ipynb":
            return data.replace(b"ci\\n", b"CI\\n")
        if damage == "schema 1" and name == "manifest.json":  # a book a schema-1 reader would miss
            return json.dumps({**json.loads(data), "schema": 1}).encode()
        return data

    info = tarfile.TarInfo("executed/99_z.ipynb")
    info.size = 2
    bad = rebuild(
        out, tmp_path / "bad.tar.gz", edit, [(info, b"{}")] if damage == "unlisted" else []
    )
    if damage == "truncate":
        bad.write_bytes(out.read_bytes()[: out.stat().st_size - 200])
    message = {
        "tamper": "executed/01_b.ipynb has .* altered",
        "truncate": "truncated",
        "schema 1": "book is malformed",
        "unlisted": "executed/99_z.ipynb' is not listed",
    }[damage]
    dest = tmp_path / "c"
    (dest / "executed").mkdir(parents=True)
    (dest / "executed" / "00_a.ipynb").write_text("stand-in")
    with pytest.raises(ArchiveError, match=message):
        archive.extract_book(bad, dest)
    assert files_under(dest) == {"executed/00_a.ipynb": b"stand-in"}, "nothing written"
    with pytest.raises(ArchiveError, match=message):
        archive.import_runs(bad, runs_dir=tmp_path / "r")


def test_lean_archive_carries_only_the_models_the_chapters_read_as_float16(
    tmp_path, monkeypatch, capsys
) -> None:
    made = make_runs(tmp_path / "a", monkeypatch, students=2)
    src = executed_book(tmp_path / "book")
    read = f"student/{made['student0'].path.name}"
    (src / archive.MODELS_USED).write_text(f"{read}\n{read}\n")  # read twice: listed once
    out = tmp_path / "lean.tar.gz"
    args = ["runs", "export", str(out), "--runs", str(tmp_path / "a"), "--book", str(src)]
    assert cli.main([*args, "--lean"]) == 0
    assert "lean: 2 models as float16, the rest metrics only" in capsys.readouterr().out

    manifest = archive._read(out)
    assert manifest["lean"] is True
    by_hash = {r["hash"]: r for r in manifest["runs"]}
    for name in ("teacher", "student0"):
        entry = by_hash[made[name].path.name]
        assert entry["model_dtype"] == "float16" and "model.pt" in entry["files"]
    assert "model.pt" not in by_hash[made["student1"].path.name]["files"]
    assert "model_dtype" not in by_hash[made["student1"].path.name]

    archive.import_runs(out, runs_dir=tmp_path / "b")
    back = runs.open_run(tmp_path / "b" / "student" / made["student0"].path.name)
    w = back.load_torch("model.pt")["w"]
    assert w.dtype == torch.float16 and torch.equal(w.float(), torch.arange(4.0))
    assert not (tmp_path / "b" / "student" / made["student1"].path.name / "model.pt").exists()
    assert not list(tmp_path.glob(".igkd-export-*"))  # the float16 copies were temporary


def test_lean_export_without_a_book_carries_only_the_teachers_models(tmp_path, monkeypatch):
    """A study cut short travels with the teacher its next runs distil from, and metrics."""
    made = make_runs(tmp_path / "a", monkeypatch, students=2)
    out = tmp_path / "lean.tar.gz"
    manifest = archive.export_runs(out, runs_dir=tmp_path / "a", lean=True)
    by_hash = {r["hash"]: r for r in manifest["runs"]}
    teacher = by_hash[made["teacher"].path.name]
    assert teacher["model_dtype"] == "float16" and "model.pt" in teacher["files"]
    for name in ("student0", "student1"):
        assert "model.pt" not in by_hash[made[name].path.name]["files"]
    assert manifest["lean"] is True and "book" not in manifest
    for bad in ({"models": False}, {"ig": True}):
        with pytest.raises(ArchiveError, match="excludes --metrics-only and --ig"):
            archive.export_runs(tmp_path / "x.tar.gz", runs_dir=tmp_path / "a", lean=True, **bad)
    archive.import_runs(out, runs_dir=tmp_path / "b")
    back = runs.open_run(tmp_path / "b" / "teacher" / made["teacher"].path.name)
    assert back.load_torch("model.pt")["w"].dtype == torch.float16


def test_lean_export_with_a_book_needs_its_record(tmp_path, monkeypatch) -> None:
    make_runs(tmp_path / "a", monkeypatch, students=1)
    out = tmp_path / "lean.tar.gz"
    src = executed_book(tmp_path / "book")  # executed before the record existed: none
    with pytest.raises(ArchiveError, match="_models_used.txt"):
        archive.export_runs(out, runs_dir=tmp_path / "a", book=src, lean=True)
    assert not out.exists()


def test_a_model_read_back_is_recorded_where_igkd_models_used_points(tmp_path, monkeypatch):
    from igkd import checkpoints, models

    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))

    def train(run: runs.Run) -> dict:
        run.save_torch("model.pt", models.teacher().state_dict())
        return {}

    run = runs.get_or_run("teacher", {"model": "teacher", "recipe": {"normalized": True}}, train)
    checkpoints.load_model(run)  # not recorded: no IGKD_MODELS_USED
    record = tmp_path / "used.txt"
    monkeypatch.setenv(paths.MODELS_USED_ENV, str(record))
    checkpoints.load_model(run)
    assert record.read_text() == f"teacher/{run.path.name}\n"


def test_export_refuses_a_broken_book(tmp_path, monkeypatch) -> None:
    make_runs(tmp_path / "a", monkeypatch, students=1)
    out, a = tmp_path / "x.tar.gz", tmp_path / "a"
    with pytest.raises(ArchiveError, match=r"01_b.ipynb failed \(papermill recorded"):
        archive.export_runs(
            out, runs_dir=a, book=executed_book(tmp_path / "f", failed="01_b.ipynb")
        )
    no_info = executed_book(tmp_path / "n")
    (no_info / "_build_info.json").unlink()
    with pytest.raises(ArchiveError, match="no readable _build_info.json"):
        archive.export_runs(out, runs_dir=a, book=no_info)
    missing = executed_book(tmp_path / "m")
    (missing / "01_b.ipynb").unlink()
    with pytest.raises(ArchiveError, match="01_b.ipynb of _build_info.json missing"):
        archive.export_runs(out, runs_dir=a, book=missing)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
