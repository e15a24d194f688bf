"""Cheap structural checks on every notebook; `pytest --nbval` executes them."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert 'profile = os.environ.get("IGKD_PROFILE", "auto")' in params[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code), "outputs must be stripped before committing"
    assert not any(c.execution_count for c in code)
    assert nb.cells[0].cell_type == "markdown" and "How long it takes" in nb.cells[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path, caplog):
    # `papermill --help-notebook` and `-p` documentation come from this parse; a comment it cannot
    # read (an apostrophe opens a string for its tokenizer) silently drops the parameter.
    import papermill

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {
        node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
    }
    with caplog.at_level("WARNING", logger="papermill"):
        found = papermill.inspect_notebook(str(path))
    assert not [r.message for r in caplog.records if "Unable to parse" in r.message]
    assert set(found) == assigned


# Chapters whose last word is not a result (none yet); every other NN_*.ipynb is a result chapter.
NOT_RESULTS: set[str] = set()
CHAPTERS = [p for p in NOTEBOOKS if re.fullmatch(r"\d\d_.+\.ipynb", p.name)]


def test_the_result_chapters_are_found():
    assert len(CHAPTERS) >= 10 and CHAPTERS[0].name.startswith("00_")


@pytest.mark.parametrize(
    "path", [p for p in CHAPTERS if p.name not in NOT_RESULTS], ids=lambda p: p.name
)
def test_every_result_chapter_ends_with_generated_conclusions(path):
    # The closing paragraph is generated from the chapter's numbers by igkd.conclusions (or a
    # module's own `conclusion` function, as igkd.regimes has), never typed: the chapter ends with
    # the heading and one code cell that calls it and shows the Markdown.
    cells = nbformat.read(path, as_version=4).cells
    assert len(cells) >= 2
    heading, code = cells[-2], cells[-1]
    assert heading.cell_type == "markdown" and heading.source.startswith("## What this shows"), (
        "the second-to-last cell must be the markdown heading '## What this shows'"
    )
    assert code.cell_type == "code", "the last cell must be the code cell that writes the paragraph"
    calls = [
        node
        for node in ast.walk(ast.parse(code.source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id == "conclusions" or node.func.attr.startswith("conclusion"))
    ]
    assert calls, "the last cell must call a function of igkd.conclusions"
    assert "Markdown(" in code.source and "display(" in code.source
    closing = [c for c in cells if c.cell_type == "markdown" and "## What this shows" in c.source]
    assert len(closing) == 1, "one closing heading only"


def test_own_models_chapter_does_the_method_in_under_40_lines():
    """Chapter 12's promise: the cells tagged `method` (models, teacher and IG maps, the students)
    hold under 40 lines of code (blank lines and comments not counted)."""
    (path,) = [p for p in NOTEBOOKS if p.name == "12_your_own_models.ipynb"]
    nb = nbformat.read(path, as_version=4)
    method = [c for c in nb.cells if "method" in c.metadata.get("tags", [])]
    lines = [
        line
        for c in method
        for line in c.source.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert len(method) == 3 and len(lines) < 40, len(lines)
