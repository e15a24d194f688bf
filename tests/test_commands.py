"""The README's commands exactly as a reader types them on a fresh checkout: `jupyter-book build book/`
without `make book` first, and `pytest --nbval` without IGKD_PROFILE."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from igkd import paths


def _fresh_copy(dest: Path, leave_out: tuple[str, ...] = ()) -> Path:
    """`dest` made a copy of this working tree as a fresh clone of it would hold it: the tracked
    files and the untracked ones git does not ignore (so uncommitted work is tested too), less
    the paths in `leave_out` (relative, posix), nothing else."""
    root = paths.REPO_ROOT
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        src = root / name
        if src.is_file() and name not in leave_out:  # listed but deleted: not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A fresh copy of this working tree (`_fresh_copy`)."""
    return _fresh_copy(tmp_path_factory.mktemp("checkout") / "igkd")


def _reader_env(checkout: Path) -> dict[str, str]:
    """A reader's shell: this virtual environment's commands on PATH, this checkout's igkd first,
    and none of the variables the test session set (IGKD_PROFILE, IGKD_RUNS*, pytest's own)."""
    drop = ("IGKD_PROFILE", "IGKD_RUNS", "PYTEST_")  # IGKD_RUNS_KEEP too
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(checkout)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("archive", ["as committed", "removed"])
def test_jupyter_book_build_as_typed_on_a_fresh_checkout(checkout, archive, tmp_path):
    """No _toc.yml to generate and no executed notebooks: the book builds, without a warning, from
    the committed results archive's executed chapters when results/ has one (README, "Results
    that travel"), else from the notebooks unexecuted, and says which on every page."""
    from igkd.book_extension import results_archive

    if archive == "removed":  # a fresh copy without its book archive
        found = results_archive(paths.REPO_ROOT)
        leave_out = (found.relative_to(paths.REPO_ROOT).as_posix(),) if found else ()
        checkout = _fresh_copy(tmp_path / "igkd", leave_out)
    found = results_archive(checkout)
    assert not (checkout / "book" / "executed").exists()
    before = {p.relative_to(checkout).as_posix() for p in _files(checkout)}
    toc = (checkout / "book" / "_toc.yml").read_bytes()
    done = subprocess.run(
        ["jupyter-book", "build", "book/"],
        cwd=checkout,
        env=_reader_env(checkout),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]  # so `make book`'s -W would pass too
    html = checkout / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    for page in ("intro.html", "summary.html", "executed/03_distill.html"):
        text = (html / page).read_text()
        if found is None:
            assert (
                "These chapters are not executed: run <code>make book PROFILE=quick</code>" in text
            )
            assert "profile ci" not in text, page
        else:
            assert "Notebooks executed with profile quick" in text, page
            assert f"unpacked from results/{found.name}, not executed by this build" in text
    summary, distill = (
        (html / p).read_text() for p in ("summary.html", "executed/03_distill.html")
    )
    assert ("No runs here" in summary) is (found is None)
    assert ("Not executed" in distill) is (found is None)
    assert (checkout / "book" / "_toc.yml").read_bytes() == toc, "the committed TOC is kept"
    written = sorted({p.relative_to(checkout).as_posix() for p in _files(checkout)} - before)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=paths.REPO_ROOT,
        input="\n".join(written),
        capture_output=True,
        text=True,
    ).stdout.split()
    assert written and sorted(ignored) == written, "the build leaves git clean"


def test_pytest_nbval_as_typed_runs_the_ci_profile(checkout):
    """`pytest --nbval notebooks/NN.ipynb` without IGKD_PROFILE: the kernel sees the ci profile
    (not auto, which is quick on a CPU: hours) and a run cache of its own. The notebook's stored
    output is what nbval compares the kernel's with."""
    cell = nbformat.v4.new_code_cell(
        'import os\nprint(os.environ.get("IGKD_PROFILE", "auto"), '
        '"igkd-test-runs-" in os.environ.get("IGKD_RUNS", ""))'
    )
    cell.execution_count = 1  # nbval compares the outputs of cells that ran
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ci True\n")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, checkout / "notebooks" / "zz_profile.ipynb")
    try:
        done = subprocess.run(
            ["pytest", "--nbval", "notebooks/zz_profile.ipynb"],
            cwd=checkout,
            env=_reader_env(checkout),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        (checkout / "notebooks" / "zz_profile.ipynb").unlink()
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout
