"""Where things live: the repository, the data directory and the run directory.

Environment variables override every default, so a cluster job or CI can point several checkouts at
one shared copy of the data (IGKD_DATA) and of the run cache (IGKD_RUNS).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Datasets and downloaded weights: $IGKD_DATA, else `<repo>/data`."""
    return Path(os.environ.get("IGKD_DATA", REPO_ROOT / "data")).expanduser().resolve()


def runs_dir() -> Path:
    """The content-addressed run cache: $IGKD_RUNS, else `<repo>/runs`."""
    return Path(os.environ.get("IGKD_RUNS", REPO_ROOT / "runs")).expanduser().resolve()


def cache_dir() -> Path:
    """Derived, rebuildable files (decoded datasets): `<runs>/cache`."""
    return runs_dir() / "cache"


def checkpoint_dirs() -> list[Path]:
    """Folders searched for the authors' published students, in order.

    $IGKD_CHECKPOINTS first (e.g. a read-only shared copy), then `<data>/checkpoints/paper-ablation`,
    which is also where downloads go.
    """
    dirs = []
    if "IGKD_CHECKPOINTS" in os.environ:
        dirs.append(Path(os.environ["IGKD_CHECKPOINTS"]).expanduser().resolve())
    dirs.append(data_dir() / "checkpoints" / "paper-ablation")
    return dirs


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` so that `path` is either absent, the old file, or the complete new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def git_revision() -> str | None:
    """HEAD of the checkout igkd runs from, or None outside git (an installed wheel, no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
