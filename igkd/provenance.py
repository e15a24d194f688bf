"""Where a run's numbers come from: the code revision and machine that computed it, the archive it
was imported from; and the one-line listing of `igkd runs list`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from igkd.runs import Run

from igkd.archive import (
    _finished,
    _profile,
    _read_json,
    _root,
)

# --- provenance -------------------------------------------------------------------------------------


def provenance(run_path: Path | str | Run) -> dict:
    """Where a run's numbers come from: {"git_revision" (full, of the attempt that finished it, or
    of the archive it came in), "imported_from" (archive name or None), "machine" (the exporting
    machine of an imported run, else None), "host" (that computed it), "created" (its first start),
    "exported" (the archive's date or None)}. Accepts a run directory or a `runs.Run`."""
    run = Path(getattr(run_path, "path", run_path))
    meta, imp = _read_json(run / "metadata.json") or {}, _read_json(run / "imported.json") or {}
    attempts = [a for a in meta.get("attempts") or [] if isinstance(a, dict)]
    last = attempts[-1] if attempts else {}
    return {
        "git_revision": last.get("git_revision") or imp.get("git_revision"),
        "imported_from": imp.get("archive"),
        "machine": imp.get("machine"),
        "host": last.get("host"),
        "created": meta.get("created"),
        "exported": imp.get("created"),
    }


def revisions(run_paths: Iterable[Path | str | Run]) -> list[str]:
    """The distinct short (7-digit) git revisions that computed these runs, sorted; runs made
    outside a git checkout add none."""
    found = (provenance(p)["git_revision"] for p in run_paths)
    return sorted({rev[:7] for rev in found if rev})


def list_runs(runs_dir: Path | str | None = None) -> list[dict]:
    """One row per finished run: kind, hash, profile, method, compression, final test accuracy,
    short revision, archive it was imported from."""
    root, rows = _root(runs_dir), []
    for kind, h, run in _finished(root):
        metrics, prov = _read_json(run / "metrics.json") or {}, provenance(run)
        rows.append(
            {
                "kind": kind,
                "hash": h,
                "profile": _profile(run, root),
                "method": metrics.get("method"),
                "compression": metrics.get("compression"),
                "final_test_accuracy": metrics.get("final_test_accuracy"),
                "revision": prov["git_revision"][:7] if prov["git_revision"] else None,
                "imported_from": prov["imported_from"],
            }
        )
    return rows
