"""Where things live: the repository, the data directory and the run directory.

Environment variables override every default, so a cluster job or CI can point several checkouts at
one shared copy of the data (IGKD_DATA) and of the run cache (IGKD_RUNS).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, one process at a time
    fcntl = None

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# A file to which every model read back from a run appends "<kind>/<hash>": `igkd.book` points its
# chapters' kernels at `<book>/executed/_models_used.txt`, so that a lean archive of the book
# (`igkd runs export --book --lean`) carries exactly the models its chapters need.
MODELS_USED_ENV = "IGKD_MODELS_USED"


def note_model_used(kind: str, name: str) -> None:
    """Append "kind/name" to $IGKD_MODELS_USED when it is set (one short line: an atomic append)."""
    if target := os.environ.get(MODELS_USED_ENV):
        with open(target, "a", encoding="utf-8") as f:
            f.write(f"{kind}/{name}\n")


def data_dir() -> Path:
    """Datasets and downloaded weights: $IGKD_DATA, else `<repo>/data`."""
    return Path(os.environ.get("IGKD_DATA", REPO_ROOT / "data")).expanduser().resolve()


def runs_dir() -> Path:
    """The content-addressed run cache: $IGKD_RUNS, else `<repo>/runs`."""
    return Path(os.environ.get("IGKD_RUNS", REPO_ROOT / "runs")).expanduser().resolve()


@contextmanager
def runs_dir_override(root: Path) -> Iterator[None]:
    """`runs_dir()` is `root` inside the block (for tools that work on a named run cache, such as
    `igkd runs export --runs DIR`), whatever $IGKD_RUNS says; restored afterwards."""
    before = os.environ.get("IGKD_RUNS")
    os.environ["IGKD_RUNS"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("IGKD_RUNS", None)
        else:
            os.environ["IGKD_RUNS"] = before


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


@contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` (created if missing); waits, saying so, while
    another process holds it. The lock dies with its holder (also on SIGKILL), so a crashed job
    never blocks the next one. `what` names the guarded thing in the waiting message."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock_file, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s is in use by another process; waiting", what)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
