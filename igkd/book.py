"""The executable paper: the notebooks executed by papermill, built into a Jupyter Book, checked in
a headless browser.

`python -m igkd.book execute --profile ci` runs every notebook of `notebooks/` into `book/executed/`
(and records the profile, data and machine in `book/executed/_build_info.json`); `prepare` marks
papermill's injected-parameters cells for removal, adds to each chapter a note saying how it was
run, refuses notebooks that failed or were not executed, and writes `book/_toc.yml` (one
chapter per notebook of `notebooks/`; committed, so `toc` rewrites the same file) and
`book/summary.md` (from the run cache, `igkd.report`); `build` runs
`jupyter-book build -W -n --keep-going`; `check` opens every built page in headless Chromium.
`make book PROFILE=...` does all but the check.

This module is also the Sphinx extension (`sphinx: extra_extensions` in _config.yml) that puts the
profile, data and machine in a banner on every page; and, so that `jupyter-book build book/` works
on a fresh clone, at the start of every build it fills in what an executed build would have put in
`book/executed/`: the chapters of a results archive (the newest `results/*.tar.gz` written by
`igkd runs export --book`, used only when `igkd.archive.extract_book` verifies all of it) when
there is one, else the notebooks unexecuted, under a banner that says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from igkd import paths, profiles
from igkd.browser_check import check_site, find_chromium, problems  # noqa: F401 (book's CLI)
from igkd.errors import BookError

BOOK_DIR = paths.REPO_ROOT / "book"
NOTEBOOKS_DIR = paths.REPO_ROOT / "notebooks"
INFO_FILE = "_build_info.json"  # in <book>/executed/, written by `execute`
NOTE_TAG = "igkd-run-note"  # the cell `prepare` inserts, so that preparing twice replaces it
GENERATED = ("summary.md",)  # written by `prepare` (or by the extension, a stand-in); not committed
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # an ipywidget in a notebook's outputs
NOT_EXECUTED = "igkd_not_executed"  # notebook metadata of a chapter copied unexecuted
MANIFEST_KEYS = ("created", "git_revision", "machine", "profile", "note", "igkd_version")
RUN_IT = "run `make book PROFILE=quick` (or `PROFILE=ci`, seconds per notebook) to execute them"
FRONT, BACK = ["intro", "summary"], ["differences", "reproducing"]  # pages around the chapters


def notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chapter notebooks `NN_name.ipynb` of `folder`, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def notebooks_beside(book_dir: Path) -> Path:
    """The notebooks a book folder is made of: `notebooks/` beside it, else the repository's."""
    beside = Path(book_dir).resolve().parent / "notebooks"
    return beside if beside.is_dir() else NOTEBOOKS_DIR


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine() -> dict[str, object]:
    """What the notebooks ran on: CPU model and cores, memory, GPU, operating system."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not POSIX
        memory_gb = None
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(terse=True),
    }


def describe(info: dict) -> str:
    """One line: profile, data and machine of a build (for the banner and the chapter notes)."""
    m, env = info["machine"], info["environment"]
    text = (
        f"profile {info['profile']} · data: {info['data']} · machine: {_machine_text(m)}, "
        f"{env['threads']} torch threads · "
        f"igkd {env['igkd']} (git {env['git']}), torch {env['torch']}, Python {env['python']}"
    )
    if results := info.get("results"):
        made = str(results.get("created") or "unknown date")[:10]
        where = _machine_text(results["machine"]) if results.get("machine") else "unknown machine"
        profile = f", profile {results['profile']}" if results.get("profile") else ""
        text += (
            f" · runs imported from the archive {results['archive']} (made {made} on {where}, "
            f"git {results.get('git_revision') or 'unknown'}{profile})"
        )
    return text


def _machine_text(m: dict) -> str:
    """'CPU, N cores, M GB, GPU' of a `machine()` dict (or an archive manifest's machine)."""
    memory = f", {m['memory_gb']:g} GB" if m.get("memory_gb") else ""
    cpu, gpu = m.get("cpu") or "unknown CPU", m.get("gpu") or "no GPU"
    return f"{cpu}, {m.get('cores')} cores{memory}, {gpu}"


def read_info(book_dir: Path = BOOK_DIR) -> dict:
    """The `_build_info.json` that `execute` wrote; BookError if the notebooks were not executed."""
    file = Path(book_dir) / "executed" / INFO_FILE
    if not file.is_file():
        raise BookError(
            f"{file} not found: execute the notebooks first (make reproduce PROFILE=ci|quick|paper)"
        )
    return json.loads(file.read_text())


def read_manifest(archive: Path) -> dict:
    """The `manifest.json` of a run-cache archive (`igkd runs export`): created, git_revision,
    machine (cpu, cores, memory_gb, gpu, os), profile, note. It is the archive's first member, so
    only that is read. BookError if the archive is unreadable or has no manifest."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            first = tar.next()
            if first is None or Path(first.name).name != "manifest.json" or not first.isfile():
                raise BookError(f"{archive}: the first member is not manifest.json")
            manifest = json.loads(tar.extractfile(first).read())
    except (OSError, tarfile.TarError, ValueError) as e:
        raise BookError(f"{archive}: not a run-cache archive with a manifest ({e})") from e
    if not isinstance(manifest, dict):
        raise BookError(f"{archive}: manifest.json is not an object")
    return manifest


# --- execute ---------------------------------------------------------------------------------------


def execute(
    profile: str | None = None,
    book_dir: Path = BOOK_DIR,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    data_root: str | Path | None = None,
    resume: bool = False,
    results: Path | None = None,
) -> dict:
    """Execute every notebook with papermill into `<book_dir>/executed/` in one profile.

    Each gets `profile` as an injected parameter and runs with the notebooks folder as its
    working directory, in a kernel that inherits this process's environment (IGKD_RUNS, so the
    runs it makes land in the same cache the summary reads). Previously executed notebooks are
    removed first: a book is one profile's. With `resume`, an executed notebook is kept instead
    when it finished without error in this profile from the same cells as its source (so a
    killed `make book` continues where it stopped; an edited notebook runs again). Stops at the
    first notebook that fails (papermill writes the failed notebook, with its error, into
    executed/). `results`: the run-cache archive the runs were imported from (`make book
    RESULTS=...` imports it first); its manifest is recorded, and the banner names it. Returns the
    build info.
    """
    import papermill

    from igkd import data

    prof = profiles.get(profile)
    manifest = read_manifest(results) if results is not None else None
    out = Path(book_dir) / "executed"
    out.mkdir(parents=True, exist_ok=True)
    kept = {}  # notebook name -> {"seconds", "finished"} of its execution kept by `resume`
    for nb in notebooks(notebooks_dir) if resume else []:
        if done := _reusable(out / nb.name, nb, prof.name):
            kept[nb.name] = done
    for old in [*out.glob("*.ipynb"), out / INFO_FILE]:
        if old.name not in kept:
            old.unlink(missing_ok=True)
    test = data.load("cifar10", "test", data_root, synthetic_fallback=prof.synthetic_fallback)
    info: dict = {
        "profile": prof.name,
        "data": test.source,
        "machine": machine(),
        "environment": profiles.environment(prof.name),
        "runs": str(paths.runs_dir()),
        "started": _now(),
        "notebooks": {},
    }
    if manifest is not None:  # what it says of itself, not its list of files
        info["results"] = {"archive": Path(results).name, "runs": len(manifest.get("runs") or [])}
        info["results"].update({k: manifest.get(k) for k in MANIFEST_KEYS})
    for nb in notebooks(Path(notebooks_dir)):
        if nb.name in kept:
            info["notebooks"][nb.name] = kept[nb.name]
            print(f"kept {nb.name} ({prof.name}, executed {kept[nb.name]['finished']})", flush=True)
            continue
        print(f"executing {nb.name} ({prof.name})", flush=True)
        started = time.perf_counter()
        papermill.execute_notebook(
            str(nb),
            str(out / nb.name),
            parameters={"profile": prof.name},
            cwd=str(notebooks_dir),
            kernel_name="python3",
            progress_bar=False,
        )
        seconds = time.perf_counter() - started
        info["notebooks"][nb.name] = {"seconds": round(seconds, 1), "finished": _now()}
        print(f"  {seconds:.4g} s", flush=True)
    info["finished"] = _now()
    paths.atomic_write_bytes(out / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return info


# --- prepare ---------------------------------------------------------------------------------------


def _cells(nb) -> list[tuple[str, str]]:
    """The notebook's own cells: without papermill's injected parameters and `prepare`'s note."""
    added = {"injected-parameters", NOTE_TAG}
    return [
        (c.cell_type, c.source)
        for c in nb.cells
        if not added & set(c.get("metadata", {}).get("tags", []))
    ]


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
        or _error_of(done)
        or _cells(done) != _cells(src)
    ):
        return None
    return {"seconds": round(pm["duration"], 1), "finished": pm["end_time"][:19] + "+00:00"}


def _note(info: dict, name: str, nb) -> str:
    """The markdown of the note on how chapter `name` was run."""
    pm = nb.metadata.get("papermill", {})
    injected = ", ".join(f"`{k}={v!r}`" for k, v in pm.get("parameters", {}).items())
    seconds = info["notebooks"].get(name, {}).get("seconds")
    took = f" in {seconds:.4g} s" if seconds is not None else ""
    finished = (pm.get("end_time") or "unknown")[:19].replace("T", " ")
    return (
        ":::{admonition} How this chapter was run\n:class: note\n"
        f"Executed by papermill{took}, finished {finished} UTC, with "
        f"{injected or 'no parameters'} injected (the parameters cell below shows the defaults). "
        f"Run with {describe(info)}.\n:::"
    )


def _drop_widgets(nb) -> None:
    """Remove the widget outputs and the widget state papermill saved: tqdm draws its progress
    bars as ipywidgets in a kernel, and the book, static, leaves them out as it leaves out the
    text bars on stderr (`stderr_output: remove`); kept, each page would load the widget
    JavaScript from a CDN to draw finished progress bars."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]


def _error_of(nb) -> str | None:
    """'cell i: Ename: message' for the first error output of an executed notebook, else None."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
    if nb.metadata.get("papermill", {}).get("exception"):
        return "papermill recorded an exception"
    return None


def toc_text(notebooks_dir: Path = NOTEBOOKS_DIR) -> str:
    """The text of `_toc.yml`: the introduction and summary, one chapter `executed/NN_name` per
    notebook of `notebooks_dir`, then the differences and reproducing pages."""
    chapters = [f"executed/{p.stem}" for p in notebooks(Path(notebooks_dir))]
    if not chapters:
        raise BookError(f"no notebooks NN_name.ipynb in {notebooks_dir}")

    def part(caption: str, files: list[str]) -> str:
        return f"- caption: {caption}\n  chapters:\n" + "".join(f"  - file: {f}\n" for f in files)

    return (
        "# One chapter per notebook of notebooks/. Written by `python -m igkd.book toc` (and by\n"
        "# `prepare`), committed: run it after adding a notebook (tests/test_book.py checks).\n"
        f"format: jb-book\nroot: {FRONT[0]}\nparts:\n"
        + part("Results", FRONT[1:])
        + part("Chapters (one per notebook)", chapters)
        + part("Notes", BACK)
    )


def write_toc(book_dir: Path = BOOK_DIR, notebooks_dir: Path | None = None) -> Path:
    """`<book_dir>/_toc.yml` as `toc_text` gives it for `notebooks_dir` (default: the notebooks
    beside the book); the file is left untouched when it already says that (it is committed: a
    build leaves git clean)."""
    notebooks_dir = notebooks_beside(book_dir) if notebooks_dir is None else notebooks_dir
    file, text = Path(book_dir) / "_toc.yml", toc_text(notebooks_dir)
    if not file.is_file() or file.read_text() != text:
        file.write_text(text)
    return file


def prepare(
    book_dir: Path = BOOK_DIR,
    data_root: str | Path | None = None,
    notebooks_dir: Path | None = None,
) -> list[Path]:
    """Make the executed notebooks a book: check them, hide the injected parameters, add the
    note on how each was run, write _toc.yml (one chapter per notebook of `notebooks_dir`,
    default: `notebooks/` beside the book, else the repository's) and summary.md. Returns the
    chapter notebooks.

    BookError if the notebooks were not executed (each of `notebooks_dir`), one failed, or they
    mix profiles.
    """
    import nbformat

    from igkd import report

    book_dir = Path(book_dir)
    notebooks_dir = notebooks_beside(book_dir) if notebooks_dir is None else Path(notebooks_dir)
    info = read_info(book_dir)
    chapters = notebooks(book_dir / "executed")
    expected = {p.name for p in notebooks(notebooks_dir)}
    missing = sorted((set(info["notebooks"]) | expected) - {p.name for p in chapters})
    if missing:
        raise BookError(f"executed notebooks missing: {', '.join(missing)}; run make reproduce")
    for path in chapters:
        nb = nbformat.read(path, as_version=4)
        error = _error_of(nb)
        if error:
            raise BookError(f"{path} failed ({error}); fix it and run make reproduce")
        injected = nb.metadata.get("papermill", {}).get("parameters", {}).get("profile")
        if path.name not in info["notebooks"] or injected != info["profile"]:
            raise BookError(
                f"{path} was not executed in this build (profile {info['profile']}); "
                "run make reproduce"
            )
        nb.cells = [c for c in nb.cells if NOTE_TAG not in c.metadata.get("tags", [])]
        _drop_widgets(nb)
        for cell in nb.cells:
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        note = nbformat.v4.new_markdown_cell(_note(info, path.name, nb))
        note.metadata["tags"] = [NOTE_TAG]
        nb.cells.insert(1, note)  # after the title cell
        nbformat.write(nb, path)
    write_toc(book_dir, notebooks_dir)
    table = report.summary_table(info["profile"], data_root)
    header = (
        ":::{admonition} This build\n:class: note\n"
        f"Notebooks executed with {describe(info)}. Runs read from `{info['runs']}` on "
        f"{_now()[:10]}.\n:::"
    )
    (book_dir / "summary.md").write_text(report.summary_markdown(table, header))
    return chapters


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
    args = parser.parse_args(argv)
    try:
        if args.step == "toc":
            print(f"wrote {write_toc(args.book)}")
        if args.step in ("execute", "all"):
            execute(args.profile, args.book, resume=args.resume, results=args.results)
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
