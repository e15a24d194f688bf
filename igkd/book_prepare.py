"""Make executed notebooks a book (`python -m igkd.book prepare`): refuse notebooks that failed or
were not executed in this build, hide papermill's injected-parameters cells, add to each chapter a
note saying how it was run, and write `book/_toc.yml` (one chapter per notebook of `notebooks/`;
committed, so `toc` rewrites the same file) and `book/summary.md` (from the run cache,
`igkd.report`).
"""

from __future__ import annotations

from pathlib import Path

from igkd.book_info import (
    BOOK_DIR,
    NOTEBOOKS_DIR,
    describe,
    notebooks,
    notebooks_beside,
    read_info,
    utc_now,
)
from igkd.errors import BookError

NOTE_TAG = "igkd-run-note"  # the cell `prepare` inserts, so that preparing twice replaces it
GENERATED = ("summary.md",)  # written by `prepare` (or by the extension, a stand-in); not committed
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # an ipywidget in a notebook's outputs
FRONT, BACK = ["intro", "summary"], ["differences", "reproducing"]  # pages around the chapters


def own_cells(nb) -> list[tuple[str, str]]:
    """The notebook's own cells: without papermill's injected parameters and `prepare`'s note."""
    added = {"injected-parameters", NOTE_TAG}
    return [
        (c.cell_type, c.source)
        for c in nb.cells
        if not added & set(c.get("metadata", {}).get("tags", []))
    ]


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


def error_of(nb) -> str | None:
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
        error = error_of(nb)
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
        f"{utc_now()[:10]}.\n:::"
    )
    (book_dir / "summary.md").write_text(report.summary_markdown(table, header))
    return chapters
