"""The executable paper: the notebooks executed by papermill, built into a Jupyter Book, checked in
a headless browser.

`python -m igkd.book execute --profile ci` runs every notebook of `notebooks/` into `book/executed/`
(and records the profile, data and machine in `book/executed/_build_info.json`); `prepare` marks
papermill's injected-parameters cells for removal, adds to each chapter a note saying how it was
run, refuses notebooks that failed, and writes `book/_toc.yml` (from the executed notebooks that
exist) and `book/summary.md` (from the run cache, `igkd.report`); `build` runs
`jupyter-book build -W -n --keep-going`; `check` opens every built page in headless Chromium.
`make book PROFILE=...` does all but the check. This module is also the Sphinx extension that puts
the profile, data and machine in a banner on every page (`sphinx: extra_extensions` in _config.yml).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from igkd import paths, profiles
from igkd.errors import BookError

BOOK_DIR = paths.REPO_ROOT / "book"
NOTEBOOKS_DIR = paths.REPO_ROOT / "notebooks"
INFO_FILE = "_build_info.json"  # in <book>/executed/, written by `execute`
NOTE_TAG = "igkd-run-note"  # the cell `prepare` inserts, so that preparing twice replaces it
GENERATED = ("_toc.yml", "summary.md")  # written by `prepare`; not committed
FRONT, BACK = ["intro", "summary"], ["differences", "reproducing"]  # pages around the chapters


def notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chapter notebooks `NN_name.ipynb` of `folder`, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


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
    memory = f", {m['memory_gb']:g} GB" if m.get("memory_gb") else ""
    return (
        f"profile {info['profile']} · data: {info['data']} · machine: {m['cpu']}, "
        f"{m['cores']} cores{memory}, {m['gpu'] or 'no GPU'}, {env['threads']} torch threads · "
        f"igkd {env['igkd']} (git {env['git']}), torch {env['torch']}, Python {env['python']}"
    )


def read_info(book_dir: Path = BOOK_DIR) -> dict:
    """The `_build_info.json` that `execute` wrote; BookError if the notebooks were not executed."""
    file = Path(book_dir) / "executed" / INFO_FILE
    if not file.is_file():
        raise BookError(
            f"{file} not found: execute the notebooks first (make reproduce PROFILE=ci|quick|paper)"
        )
    return json.loads(file.read_text())


# --- execute ---------------------------------------------------------------------------------------


def execute(
    profile: str | None = None,
    book_dir: Path = BOOK_DIR,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    data_root: str | Path | None = None,
    resume: bool = False,
) -> dict:
    """Execute every notebook with papermill into `<book_dir>/executed/` in one profile.

    Each gets `profile` as an injected parameter and runs with the notebooks folder as its
    working directory, in a kernel that inherits this process's environment (IGKD_RUNS, so the
    runs it makes land in the same cache the summary reads). Previously executed notebooks are
    removed first: a book is one profile's. With `resume`, an executed notebook is kept instead
    when it finished without error in this profile from the same cells as its source (so a
    killed `make book` continues where it stopped; an edited notebook runs again). Stops at the
    first notebook that fails (papermill writes the failed notebook, with its error, into
    executed/). Returns the build info.
    """
    import papermill

    from igkd import data

    prof = profiles.get(profile)
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


def _error_of(nb) -> str | None:
    """'cell i: Ename: message' for the first error output of an executed notebook, else None."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
    if nb.metadata.get("papermill", {}).get("exception"):
        return "papermill recorded an exception"
    return None


def write_toc(book_dir: Path = BOOK_DIR) -> Path:
    """`<book_dir>/_toc.yml`: the introduction and summary, one chapter per executed notebook
    that exists, then the differences and reproducing pages."""
    book_dir = Path(book_dir)
    chapters = [f"executed/{p.stem}" for p in notebooks(book_dir / "executed")]
    if not chapters:
        raise BookError(f"no executed notebooks in {book_dir / 'executed'}: run make reproduce")

    def part(caption: str, files: list[str]) -> str:
        return f"- caption: {caption}\n  chapters:\n" + "".join(f"  - file: {f}\n" for f in files)

    text = (
        "# Written by `python -m igkd.book prepare` from the executed notebooks: do not edit.\n"
        f"format: jb-book\nroot: {FRONT[0]}\nparts:\n"
        + part("Results", FRONT[1:])
        + part("Chapters (executed notebooks)", chapters)
        + part("Notes", BACK)
    )
    (book_dir / "_toc.yml").write_text(text)
    return book_dir / "_toc.yml"


def prepare(book_dir: Path = BOOK_DIR, data_root: str | Path | None = None) -> list[Path]:
    """Make the executed notebooks a book: check them, hide the injected parameters, add the
    note on how each was run, write _toc.yml and summary.md. Returns the chapter notebooks.

    BookError if the notebooks were not executed, one failed, or they mix profiles.
    """
    import nbformat

    from igkd import report

    book_dir = Path(book_dir)
    info = read_info(book_dir)
    chapters = notebooks(book_dir / "executed")
    missing = sorted(set(info["notebooks"]) - {p.name for p in chapters})
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
        for cell in nb.cells:
            tags = cell.metadata.setdefault("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                tags.append("remove-cell")
        note = nbformat.v4.new_markdown_cell(_note(info, path.name, nb))
        note.metadata["tags"] = [NOTE_TAG]
        nb.cells.insert(1, note)  # after the title cell
        nbformat.write(nb, path)
    write_toc(book_dir)
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


# --- the Sphinx extension: the banner on every page ------------------------------------------------


def _announce(app, config) -> None:
    info = read_info(Path(app.srcdir))
    text = f"Notebooks executed with {describe(info)}."
    config.html_theme_options = {**config.html_theme_options, "announcement": text}


def setup(app) -> dict:
    """Sphinx entry point: a banner with the build's profile, data and machine on every page."""
    app.connect("config-inited", _announce)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# --- check in a headless browser -------------------------------------------------------------------

_PAGE_REPORT = """
(async () => {
  const imgs = [...document.querySelectorAll("img")];
  imgs.forEach((i) => { i.loading = "eager"; });
  await Promise.all(imgs.map((i) => i.complete ? null
    : new Promise((r) => { i.onload = i.onerror = r; setTimeout(r, 10000); })));
  const main = document.querySelector("article.bd-article") || document.body;
  return JSON.stringify({
    title: document.title,
    h1: [...main.querySelectorAll("h1")].map((h) => h.textContent.replace("#", "").trim()),
    images: imgs.length,
    broken: imgs.filter((i) => !(i.naturalWidth > 0)).map((i) => i.getAttribute("src")),
    tables: [...main.querySelectorAll("table")].map((t) => [...t.rows].map((r) =>
      [...r.cells].map((c) => c.textContent.trim()).join("\\t")).join("\\n")),
    banner: (document.querySelector(".bd-header-announcement") || {}).innerText || "",
    errors: main.querySelectorAll(".output.error, .output.traceback, .traceback").length,
    text: main.innerText,
  });
})()
"""


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome executable ($IGKD_CHROMIUM first), or None."""
    candidates = [os.environ.get("IGKD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for name in filter(None, candidates):
        found = shutil.which(name)
        if found:
            return found
    return None


class _DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket  # websocket-client, a dependency of jupyter_server

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.exceptions: list[str] = []

    def _note_exception(self, msg: dict) -> None:
        if msg.get("method") == "Runtime.exceptionThrown":
            details = msg["params"]["exceptionDetails"]
            what = details.get("exception", {}).get("description") or details.get("text", "")
            self.exceptions.append(f"{what.splitlines()[0]} ({details.get('url', '')})")

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            self._note_exception(msg)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise BookError(f"Chromium {method} failed: {msg['error']}")
                return msg.get("result", {})

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._note_exception(msg)
            if msg.get("method") == event:
                return
        raise BookError(f"Chromium: no {event} within {timeout} s")


def check_site(html_dir: Path, page_names: list[str], chromium: str | None = None) -> dict:
    """Open each page of a built book in headless Chromium and report what it rendered.

    Network access other than file:// is blocked, so the check needs nothing but the files.
    Returns {page: {"title", "h1", "images", "broken" (src of images with naturalWidth 0),
    "tables" (their text), "banner", "errors" (error-output elements), "text", "exceptions"
    (JavaScript exceptions)}}. BookError if Chromium is missing or does not start.
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BookError("no Chromium found: apt-get install chromium (or set IGKD_CHROMIUM)")
    html_dir = Path(html_dir).resolve()
    profile_dir = Path(tempfile.mkdtemp(prefix="igkd-chromium-"))
    args = [
        chromium,
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,1024",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = profile_dir / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BookError(f"{chromium} did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            targets = [t for t in json.load(r) if t.get("type") == "page"]
        page = _DevTools(targets[0]["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Network.enable")
        page.call("Network.setBlockedURLs", urls=["http://*", "https://*"])
        found = {}
        for name in page_names:
            page.exceptions = []
            page.call("Page.navigate", url=(html_dir / name).as_uri())
            page.wait_for("Page.loadEventFired")
            result = page.call("Runtime.evaluate", expression=_PAGE_REPORT, awaitPromise=True)
            found[name] = {**json.loads(result["result"]["value"]), "exceptions": page.exceptions}
        page.ws.close()
        return found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile_dir, ignore_errors=True)


# JavaScript errors of the book's own toolchain that do not affect what a page shows.
KNOWN_JS_ERRORS = (
    # sphinx-thebe 0.3.1 writes its inline config script twice into every page
    "Identifier 'THEBE_JS_URL' has already been declared",
)


def problems(found: dict) -> list[str]:
    """What is wrong with the pages `check_site` found: pages that did not render, images not
    shown, Python tracebacks, a missing banner, JavaScript errors (other than KNOWN_JS_ERRORS)."""
    out = []
    for name, page in found.items():
        if not page["h1"]:
            out.append(f"{name}: no title (h1): the page did not render")
        if page["broken"]:
            out.append(f"{name}: images not shown: {', '.join(page['broken'])}")
        if page["errors"] or "Traceback (most recent call last)" in page["text"]:
            out.append(f"{name}: shows a Python traceback or an error output")
        if "profile" not in page["banner"]:
            out.append(f"{name}: no banner with the profile, data and machine")
        for error in page["exceptions"]:
            if not any(known in error for known in KNOWN_JS_ERRORS):
                out.append(f"{name}: JavaScript error {error}")
    return out


# --- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m igkd.book", description=__doc__.split("\n")[0])
    parser.add_argument(
        "step",
        choices=["execute", "prepare", "build", "check", "all"],
        help="all: execute to build",
    )
    parser.add_argument("--profile", default=None, help="ci | quick | paper | auto ($IGKD_PROFILE)")
    parser.add_argument("--book", type=Path, default=BOOK_DIR, help="the book folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep executed notebooks that finished in this profile from unchanged cells",
    )
    args = parser.parse_args(argv)
    try:
        if args.step in ("execute", "all"):
            execute(args.profile, args.book, resume=args.resume)
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


if __name__ == "__main__":
    sys.exit(main())
