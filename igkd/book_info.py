"""What a book build is made of and says about itself: the book and notebook folders, the chapter
notebooks, the build info `igkd.book.execute` records in `<book>/executed/_build_info.json` (profile,
data, machine, environment), the one line that the banner and the chapter notes show
(`describe`), and the manifest of a results archive (`read_manifest`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tarfile
from pathlib import Path

from igkd import paths
from igkd.errors import BookError

BOOK_DIR = paths.REPO_ROOT / "book"
NOTEBOOKS_DIR = paths.REPO_ROOT / "notebooks"
INFO_FILE = "_build_info.json"  # in <book>/executed/, written by `execute`
MODELS_USED = "_models_used.txt"  # "<kind>/<hash>" of every model the chapters read back
NOT_EXECUTED = "igkd_not_executed"  # notebook metadata of a chapter copied unexecuted
MANIFEST_KEYS = ("created", "git_revision", "machine", "profile", "note", "igkd_version")
RUN_IT = "run `make book PROFILE=quick` (or `PROFILE=ci`, seconds per notebook) to execute them"


def notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The chapter notebooks `NN_name.ipynb` of `folder`, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def notebooks_beside(book_dir: Path) -> Path:
    """The notebooks a book folder is made of: `notebooks/` beside it, else the repository's."""
    beside = Path(book_dir).resolve().parent / "notebooks"
    return beside if beside.is_dir() else NOTEBOOKS_DIR


def utc_now() -> str:
    """The time now, UTC, to the second, in ISO format (as the build info records times)."""
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
    # Builds recorded before these were: nothing said, rather than a guess.
    precision = f" · precision: {env['precision']}" if env.get("precision") else ""
    teacher = f" · teacher: {env['teacher']}" if env.get("teacher") else ""
    text = (
        f"profile {info['profile']} · data: {info['data']}{precision}{teacher} · "
        f"machine: {_machine_text(m)}, {env['threads']} torch threads · "
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
