"""The executable paper: the notebooks executed by papermill, built into a Jupyter Book, checked in
a headless browser.

`python -m igkd.book execute --profile ci` runs every notebook of `notebooks/` into `book/executed/`
(and records the profile, data and machine in `book/executed/_build_info.json`, `igkd.book_info`);
`prepare` (`igkd.book_prepare`) marks papermill's injected-parameters cells for removal, adds to
each chapter a note saying how it was run, refuses notebooks that failed or were not executed, and
writes `book/_toc.yml` (one chapter per notebook of `notebooks/`; committed, so `toc` rewrites the
same file) and `book/summary.md` (from the run cache, `igkd.report`); `build` runs
`jupyter-book build -W -n --keep-going`; `check` opens every built page in headless Chromium
(`igkd.browser_check`). `make book PROFILE=...` does all but the check. The names of those modules
stay importable from here.

This module is also the Sphinx extension (`sphinx: extra_extensions` in _config.yml) that puts the
profile, data and machine in a banner on every page; and, so that `jupyter-book build book/` works
on a fresh clone, at the start of every build it fills in what an executed build would have put in
`book/executed/`: the chapters of a results archive (the newest `results/*.tar.gz` written by
`igkd runs export --book`, used only when `igkd.archive.extract_book` verifies all of it) when
there is one, else the notebooks unexecuted, under a banner that says so. The extension's code is
in `igkd.book_extension`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from igkd import paths, profiles
from igkd.book_info import (  # noqa: F401 (re-exported: book.BOOK_DIR, book.machine, ...)
    BOOK_DIR,
    INFO_FILE,
    MANIFEST_KEYS,
    MODELS_USED,
    NOT_EXECUTED,
    NOTEBOOKS_DIR,
    RUN_IT,
    describe,
    machine,
    notebooks,
    notebooks_beside,
    read_info,
    read_manifest,
    utc_now,
)
from igkd.book_prepare import (  # noqa: F401 (re-exported: book.prepare, book.write_toc, ...)
    BACK,
    FRONT,
    GENERATED,
    NOTE_TAG,
    WIDGET_VIEW,
    error_of,
    own_cells,
    prepare,
    toc_text,
    write_toc,
)
from igkd.browser_check import check_site, find_chromium, problems  # noqa: F401 (book's CLI)
from igkd.errors import BookError

_error_of = error_of  # the name igkd.archive imports it by


# --- execute ---------------------------------------------------------------------------------------


def execute(
    profile: str | None = None,
    book_dir: Path = BOOK_DIR,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    data_root: str | Path | None = None,
    resume: bool = False,
    results: Path | None = None,
    jobs: int = 1,
) -> dict:
    """Execute every notebook with papermill into `<book_dir>/executed/` in one profile.

    Each gets `profile` as an injected parameter and runs with the notebooks folder as its
    working directory, in a kernel that inherits this process's environment (IGKD_RUNS, so the
    runs it makes land in the same cache the summary reads). Previously executed notebooks are
    removed first: a book is one profile's. With `resume`, an executed notebook is kept instead
    when it finished without error in this profile from the same cells as its source (so a
    killed `make book` continues where it stopped; an edited notebook runs again, and so does
    every notebook when the teacher or the precision differs from the last build's). Stops at the
    first notebook that fails (papermill writes the failed notebook, with its error, into
    executed/). `results`: the run-cache archive the runs were imported from (`make book
    RESULTS=...` imports it first); its manifest is recorded, and the banner names it. `jobs`
    notebooks run at once, started in order (a chapter that needs a run another one is making
    waits on that run's lock, then reads it); after a failure no new notebook starts. Returns the
    build info.
    """
    from igkd import data

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise BookError(f"jobs={jobs!r}; use a positive number of notebooks run at once")
    prof = profiles.get(profile)
    manifest = read_manifest(results) if results is not None else None
    out = Path(book_dir) / "executed"
    out.mkdir(parents=True, exist_ok=True)
    # The settings outside the notebooks' own cells that change their runs: a chapter executed with
    # another teacher or precision is not kept by `resume`.
    env = profiles.environment(prof.name)
    settings = {k: env[k] for k in ("precision", "teacher")}
    settings_file = out / ".settings.json"
    if resume and settings_file.is_file() and json.loads(settings_file.read_text()) != settings:
        print(
            f"not resuming: the chapters ran with {settings_file.read_text().strip()}", flush=True
        )
        resume = False
    kept = {}  # notebook name -> {"seconds", "finished"} of its execution kept by `resume`
    for nb in notebooks(notebooks_dir) if resume else []:
        if done := _reusable(out / nb.name, nb, prof.name):
            kept[nb.name] = done
    for old in [*out.glob("*.ipynb"), out / INFO_FILE]:
        if old.name not in kept:
            old.unlink(missing_ok=True)
    paths.atomic_write_bytes(settings_file, json.dumps(settings).encode())
    # Which runs' models the chapters read back (kept chapters' reads stay recorded).
    used = out / MODELS_USED
    if not kept:
        used.unlink(missing_ok=True)
    used.touch()
    test = data.load("cifar10", "test", data_root, synthetic_fallback=prof.synthetic_fallback)
    info: dict = {
        "profile": prof.name,
        "data": test.source,
        "machine": machine(),
        "environment": env,
        "runs": str(paths.runs_dir()),
        "started": utc_now(),
        "notebooks": {},
    }
    if manifest is not None:  # what it says of itself, not its list of files
        info["results"] = {"archive": Path(results).name, "runs": len(manifest.get("runs") or [])}
        info["results"].update({k: manifest.get(k) for k in MANIFEST_KEYS})
    todo = []
    for nb in notebooks(Path(notebooks_dir)):
        if nb.name in kept:
            info["notebooks"][nb.name] = kept[nb.name]
            print(f"kept {nb.name} ({prof.name}, executed {kept[nb.name]['finished']})", flush=True)
        else:
            todo.append(nb)
    before = os.environ.get(paths.MODELS_USED_ENV)
    os.environ[paths.MODELS_USED_ENV] = str(used.resolve())  # the kernels inherit it
    try:
        for name, ran in _run_notebooks(todo, out, prof.name, Path(notebooks_dir), jobs).items():
            info["notebooks"][name] = ran
    finally:
        if before is None:
            os.environ.pop(paths.MODELS_USED_ENV, None)
        else:
            os.environ[paths.MODELS_USED_ENV] = before
    info["notebooks"] = dict(sorted(info["notebooks"].items()))
    info["finished"] = utc_now()
    paths.atomic_write_bytes(out / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return info


def _run_notebooks(
    todo: list[Path], out: Path, profile: str, cwd: Path, jobs: int
) -> dict[str, dict]:
    """Execute `todo` into `out`, `jobs` at a time in order; {name: {"seconds", "finished"}} of
    those that finished. The first failure (in notebook order) is raised once the running ones end.
    Threads suffice: each papermill call drives its own kernel process."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import papermill

    failed = threading.Event()

    def one(nb: Path) -> dict | None:
        if failed.is_set():  # another chapter failed: start nothing more
            return None
        print(f"executing {nb.name} ({profile})", flush=True)
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb),
                str(out / nb.name),
                parameters={"profile": profile},
                cwd=str(cwd),
                kernel_name="python3",
                progress_bar=False,
            )
        except BaseException:
            failed.set()
            raise
        seconds = time.perf_counter() - started
        print(f"  {nb.name}: {seconds:.4g} s", flush=True)
        return {"seconds": round(seconds, 1), "finished": utc_now()}

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, nb) for nb in todo]
    for f in futures:  # in notebook order: the first failure is the one raised
        if f.exception() is not None:
            raise f.exception()
    return {
        nb.name: f.result() for nb, f in zip(todo, futures, strict=True) if f.result() is not None
    }


def _reusable(executed: Path, source: Path, profile: str) -> dict | None:
    """{"seconds", "finished"} of `executed` if it can stand for executing `source` in `profile`
    now (finished without error, that profile injected, the same cells), else None."""
    import nbformat

    try:
        done, src = nbformat.read(executed, as_version=4), nbformat.read(source, as_version=4)
    except (OSError, ValueError):  # missing or unreadable: execute it
        return None
    pm = done.metadata.get("papermill", {})
    if (
        pm.get("parameters", {}).get("profile") != profile
        or not pm.get("end_time")
        or pm.get("duration") is None
        or error_of(done)
        or own_cells(done) != own_cells(src)
    ):
        return None
    return {"seconds": round(pm["duration"], 1), "finished": pm["end_time"][:19] + "+00:00"}


# --- build -----------------------------------------------------------------------------------------


def build(book_dir: Path = BOOK_DIR) -> Path:
    """`jupyter-book build -W -n --keep-going <book_dir>`; the HTML folder, or BookError on any
    warning or error (the build log is printed)."""
    book_dir = Path(book_dir)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()"]
    args = ["build", "-W", "-n", "--keep-going", str(book_dir)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-20000:], done.stderr[-20000:], sep="\n", file=sys.stderr)
        raise BookError(f"jupyter-book build {book_dir} failed (exit {done.returncode}); see above")
    return book_dir / "_build" / "html"


def pages(book_dir: Path = BOOK_DIR) -> list[str]:
    """The HTML pages of the built book, relative to its html folder, in table-of-contents order."""
    import yaml

    toc = yaml.safe_load((Path(book_dir) / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [f"{f}.html" for f in files]


# --- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m igkd.book", description=__doc__.split("\n")[0])
    parser.add_argument(
        "step",
        choices=["execute", "prepare", "build", "check", "all", "toc"],
        help="all: execute to build; toc: rewrite book/_toc.yml from notebooks/",
    )
    parser.add_argument("--profile", default=None, help="ci | quick | paper | auto ($IGKD_PROFILE)")
    parser.add_argument("--book", type=Path, default=BOOK_DIR, help="the book folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep executed notebooks that finished in this profile from unchanged cells",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="the run-cache archive the runs were imported from (its manifest goes in the banner)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks executed at once (each in its own kernel; 2 on 2 cores with one torch "
        "thread per kernel, OMP_NUM_THREADS=1)",
    )
    args = parser.parse_args(argv)
    try:
        if args.step == "toc":
            print(f"wrote {write_toc(args.book)}")
        if args.step in ("execute", "all"):
            execute(
                args.profile, args.book, resume=args.resume, results=args.results,
                jobs=args.jobs,
            )  # fmt: skip
        if args.step in ("prepare", "all"):
            prepare(args.book)
        if args.step in ("build", "all"):
            print(f"built {build(args.book)}")
        if args.step == "check":
            found = check_site(args.book / "_build" / "html", pages(args.book))
            bad = problems(found)
            for name, page in found.items():
                print(f"{name}: {page['images']} images, {len(page['tables'])} tables")
            if bad:
                print("\n".join(bad), file=sys.stderr)
                return 1
    except BookError as e:
        print(f"igkd.book: error: {e}", file=sys.stderr)
        return 2
    return 0


# The Sphinx extension (igkd.book in book/_config.yml) lives in book_extension.py, which imports
# this module; its names are resolved here on first use, so either module can be imported first.
_EXTENSION = (
    "NO_RUNS",
    "NOT_EXECUTED_SUMMARY",
    "NOT_PREPARED_SUMMARY",
    "_complete_info",
    "_is_placeholder",
    "_mtime",
    "_on_config_inited",
    "_placeholder",
    "_unpack_results",
    "banner",
    "materialise",
    "results_archive",
    "setup",
    "toc_chapters",
)


def __getattr__(name: str) -> object:
    if name in _EXTENSION:
        from igkd import book_extension

        return getattr(book_extension, name)
    raise AttributeError(f"module 'igkd.book' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
