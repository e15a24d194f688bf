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


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of this working tree as a fresh clone of it would hold it: the tracked files and the
    untracked ones git does not ignore (so uncommitted work is tested too), nothing else."""
    root = paths.REPO_ROOT
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path_factory.mktemp("checkout") / "igkd"
    for name in filter(None, listed.split("\0")):
        src = root / name
        if src.is_file():  # listed but deleted in the working tree: not there
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / name)
    return copy


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


def test_jupyter_book_build_as_typed_on_a_fresh_checkout(checkout):
    """No _toc.yml to generate and no executed notebooks: the book builds, without a warning,
    from the notebooks unexecuted, and says so on every page."""
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
        assert "These chapters are not executed: run <code>make book PROFILE=quick</code>" in text
        assert "profile ci" not in text, page
    assert "No runs here" in (html / "summary.html").read_text()
    assert "Not executed" in (html / "executed" / "03_distill.html").read_text()
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
