"""Loaded by every pytest run in this repository, including `pytest --nbval notebooks/NN.ipynb`
(which does not load tests/conftest.py): the session's profile and run cache."""

from __future__ import annotations

import os
import tempfile


def pytest_configure(config):
    """Tests run in the `ci` profile unless IGKD_PROFILE says otherwise: the notebook kernels nbval
    starts inherit this environment, and `auto` would be `quick` on a CPU (hours).

    The whole session (and those kernels) gets its own run cache, so tests never read or write a
    developer's runs; IGKD_RUNS_KEEP=1 uses $IGKD_RUNS instead. pytest-xdist workers inherit the
    controller's directory, so a teacher or IG store that one worker's notebook made is reused by
    the others (and by the book test); the run cache's locks make that safe."""
    os.environ.setdefault("IGKD_PROFILE", "ci")
    if "IGKD_RUNS_KEEP" not in os.environ and not hasattr(config, "workerinput"):
        os.environ["IGKD_RUNS"] = tempfile.mkdtemp(prefix="igkd-test-runs-")
