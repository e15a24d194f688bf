"""Cheap structural checks on every notebook; `pytest --nbval` executes them."""

import ast
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
