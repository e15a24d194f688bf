"""The book's Sphinx extension (`extensions: [igkd.book]` in book/_config.yml): before a build, it
fills in what a build without executed notebooks lacks (unexecuted chapters under a banner, or the
executed chapters of a results archive, verified) and sets the banner that names the profile, data
and machine on every page. `igkd.book` re-exports it, so the extension's name stays igkd.book."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

from igkd.book import (
    BOOK_DIR,
    INFO_FILE,
    NOT_EXECUTED,
    NOTE_TAG,
    RUN_IT,
    describe,
    notebooks_beside,
    read_info,
    read_manifest,
)
from igkd.errors import BookError

# --- the Sphinx extension: what a build without executed notebooks lacks, and the banner ---------


def toc_chapters(book_dir: Path = BOOK_DIR) -> list[str]:
    """The chapter notebooks `_toc.yml` names (`executed/NN_name` -> `NN_name.ipynb`), in order."""
    import yaml

    toc = yaml.safe_load((Path(book_dir) / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [f"{f.split('/', 1)[1]}.ipynb" for f in files if f.startswith("executed/")]


def _is_placeholder(path: Path) -> bool:
    """Whether `path` is a chapter `materialise` copied unexecuted (or is unreadable)."""
    try:
        return bool(json.loads(path.read_text()).get("metadata", {}).get(NOT_EXECUTED))
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: replace it


def _complete_info(book_dir: Path) -> dict | None:
    """The build info when `execute` finished a build whose notebooks are all there, else None."""
    try:
        info = read_info(book_dir)
    except (BookError, ValueError):
        return None
    executed = Path(book_dir) / "executed"
    if all((executed / name).is_file() for name in info.get("notebooks", {})):
        return info
    return None


def results_archive(repo: Path) -> Path | None:
    """The newest `<repo>/results/*.tar.gz` whose manifest lists an executed book (written by
    `igkd runs export --book`), or None. Only the manifests are read here: `materialise` has
    `archive.extract_book` verify the whole archive before it uses any of it."""
    for archive in sorted((Path(repo) / "results").glob("*.tar.gz"), key=_mtime, reverse=True):
        try:
            carried = read_manifest(archive).get("book")
        except BookError:  # not a run-cache archive at all
            continue
        if isinstance(carried, dict) and INFO_FILE in carried:
            return archive
    return None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _unpack_results(archive: Path, book_dir: Path) -> bool:
    """The executed book of `archive` into `<book_dir>` (`archive.extract_book`: all of it
    verified first); a `summary.md` of another build goes when the archive has none. False when
    the archive is refused: then nothing of it is used, and one line on stderr says why."""
    from igkd import archive as runs_archive
    from igkd.errors import ArchiveError

    try:
        written = runs_archive.extract_book(archive, book_dir)
    except ArchiveError as e:
        print(f"igkd.book: results archive {archive.name} refused, not used: {e}", file=sys.stderr)
        return False
    if Path(book_dir) / "summary.md" not in written:
        (Path(book_dir) / "summary.md").unlink(missing_ok=True)
    return True


def _placeholder(source: Path, target: Path) -> None:
    """`source` copied to `target` as it is committed, with a note that it was not executed
    (rewritten only when it changes, so that Sphinx does not read it again for nothing)."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    nb.metadata[NOT_EXECUTED] = True
    note = nbformat.v4.new_markdown_cell(
        ":::{admonition} Not executed\n:class: warning\n"
        "This chapter is the notebook as committed, without outputs: "
        "run `make book PROFILE=quick` (or `PROFILE=ci`) to execute it into this book, or run "
        f"`notebooks/{source.name}` in JupyterLab or with papermill.\n:::"
    )
    note.metadata["tags"] = [NOTE_TAG]
    note["id"] = "igkd-not-executed"  # not random: the copy is the same every build
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, note)
    text = nbformat.writes(nb) + "\n"
    if not target.is_file() or target.read_text() != text:
        target.write_text(text)


NO_RUNS = ":::{admonition} No runs here"
NOT_EXECUTED_SUMMARY = """# Results: the paper and this build side by side

{no_runs}
:class: warning
This book was built from notebooks that were not executed, so there are no runs to set beside the
paper's numbers: {run_it}, which writes this page from the run cache (see
[how to reproduce the book](reproducing.md)).
:::
"""

NOT_PREPARED_SUMMARY = """# Results: the paper and this build side by side

:::{{admonition}} Not prepared
:class: warning
The notebooks were executed ({describe}) but this page is written by
`python -m igkd.book prepare`, which `make book` runs before building.
:::
"""


def materialise(book_dir: Path = BOOK_DIR, notebooks_dir: Path | None = None) -> dict:
    """Fill in what the table of contents needs and an executed build would have put there, so
    that `jupyter-book build book/` works without `make book`. Runs at the start of every build.

    Nothing changes when `execute` finished a build (its chapters stay, though prepare may not
    have run yet: then a summary that says so is written if there is none). Otherwise, when
    `book/executed/` holds no executed notebook and the newest `results/*.tar.gz` that carries an
    executed book (`igkd runs export --book`) passes `archive.extract_book`'s verification, its
    chapters are unpacked; an archive that fails it (altered, truncated) is not used at all, and
    the banner says it was refused. Chapters still missing are copied, unexecuted, from
    `notebooks_dir` (default: `notebooks/` beside the book), marked as such; the summary then says
    no runs are here. Returns {"info": the build info or None, "not_executed": chapters copied
    unexecuted, "left": chapters of an unfinished `execute` kept as they are, "archive": the
    archive unpacked or None, "refused": the archive refused or None}.
    """
    book_dir = Path(book_dir)
    notebooks_dir = notebooks_beside(book_dir) if notebooks_dir is None else Path(notebooks_dir)
    executed = book_dir / "executed"
    chapters = toc_chapters(book_dir)
    state: dict = {
        "info": _complete_info(book_dir),
        "not_executed": [],
        "left": [],
        "archive": None,
        "refused": None,
    }
    if state["info"] is None and not any(
        not _is_placeholder(p) for p in executed.glob("[0-9][0-9]_*.ipynb")
    ):
        found = results_archive(book_dir.parent)
        if found is not None and _unpack_results(found, book_dir):
            state["archive"], state["info"] = found.name, _complete_info(book_dir)
        elif found is not None:
            state["refused"] = found.name
    executed.mkdir(parents=True, exist_ok=True)
    for name in chapters:
        target = executed / name
        if target.is_file() and not _is_placeholder(target):
            if state["info"] is None or name not in state["info"]["notebooks"]:
                state["left"].append(name)
            continue
        if (notebooks_dir / name).is_file():
            _placeholder(notebooks_dir / name, target)
            state["not_executed"].append(name)
    summary = book_dir / "summary.md"
    if state["info"] is None:
        summary.write_text(NOT_EXECUTED_SUMMARY.format(no_runs=NO_RUNS, run_it=RUN_IT))
    elif not summary.is_file() or NO_RUNS in summary.read_text():  # none, or the stand-in
        summary.write_text(NOT_PREPARED_SUMMARY.format(describe=describe(state["info"])))
    return state


def banner(state: dict) -> str:
    """The announcement on every page for `materialise`'s state."""
    info, missing, left = state["info"], state["not_executed"], state["left"]
    if info is None:
        text = f"These chapters are not executed: {RUN_IT}."
        if state.get("refused"):
            text += (
                f" (The results archive {state['refused']} was refused: it failed verification;"
                " the build log says why.)"
            )
        if left:
            text += f" ({len(left)} ran in an unfinished `make book`: `RESUME=1` keeps those.)"
        return text
    text = f"Notebooks executed with {describe(info)}."
    if state.get("archive"):
        text += f" Chapters unpacked from results/{state['archive']}, not executed by this build."
    if missing:
        names = ", ".join(Path(n).stem for n in missing)
        text += f" Not executed: {names}; {RUN_IT}."
    return text


def _on_config_inited(app, config) -> None:
    state = materialise(Path(app.srcdir))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(banner(state), quote=False))
    config.html_theme_options = {**config.html_theme_options, "announcement": text}


def setup(app) -> dict:
    """Sphinx entry point: first make the book buildable (`materialise`: chapters unpacked from
    a results archive or copied unexecuted when `make book` did not execute them), then put the
    banner with the build's profile, data and machine (or that it was not executed) on every
    page. Sphinx looks for the source files only after config-inited."""
    app.connect("config-inited", _on_config_inited, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
