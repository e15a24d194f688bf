"""Importing a runs archive: verify it all against its manifest, then add the runs the cache lacks
(staged, renamed when complete, overwriting nothing); and unpacking the executed book it carries.
The format is `igkd.archive`'s; its functions are reachable there too (`archive.import_runs`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import igkd
from igkd import paths
from igkd.errors import ArchiveError

if TYPE_CHECKING:
    pass

from igkd.archive import (
    _CHUNK,
    BOOK,
    FORMAT,
    INFO_FILE,
    MANIFEST,
    SCHEMA,
    SUMMARY,
    _digest,
    _now,
    _plain,
    _root,
    _safe_rel,
)


@dataclass
class ImportReport:
    """What `import_runs` did: run directories added, already finished here, or left alone because
    an unfinished run of that config is here (being computed, or killed)."""

    manifest: dict
    runs_dir: Path
    imported: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    unfinished_existing: list[Path] = field(default_factory=list)


# --- import -----------------------------------------------------------------------------------------


def _check_manifest(archive: Path, manifest: Any) -> dict[str, dict]:
    """The files the manifest lists, `<kind>/<hash>/<rel>` and `executed/<name>` -> {sha256,
    bytes}; ArchiveError naming what is wrong when this is not a manifest this igkd can read."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(
            f"{archive} is not an igkd runs archive (manifest format is not {FORMAT!r})"
        )
    schema = manifest.get("schema")
    if isinstance(schema, int) and schema > SCHEMA:
        raise ArchiveError(
            f"{archive} has archive schema {schema}, newer than this igkd {igkd.__version__} reads "
            f"(schema {SCHEMA}); upgrade igkd to import it"
        )
    if schema not in (1, 2):
        raise ArchiveError(f"{archive} has an unknown archive schema {schema!r}")
    book = manifest.get("book", {})
    if not isinstance(book, dict) or (INFO_FILE in book) != (schema == 2):
        raise ArchiveError(
            f"{archive}: the manifest's book is malformed (schema 2 archives, and only those, "
            f"carry one, with its {INFO_FILE})"
        )
    listed: dict[str, dict] = {}
    for entry in manifest.get("runs") if isinstance(manifest.get("runs"), list) else [None]:
        ok = isinstance(entry, dict) and _plain(entry.get("kind")) and _plain(entry.get("hash"))
        if not ok or not isinstance(entry.get("files"), dict) or f"{entry['kind']}/" == BOOK:
            raise ArchiveError(f"{archive}: the manifest lists a malformed run: {entry!r}")
        run = f"{entry['kind']}/{entry['hash']}/"
        if not {"config.json", "DONE"} <= entry["files"].keys():
            raise ArchiveError(
                f"{archive}: run {run[:-1]} lacks config.json or DONE; not a finished run"
            )
        _list(archive, listed, run, entry["files"], _safe_rel)
    _list(archive, listed, BOOK, book, _book_name)
    return listed


def _book_name(name: object) -> bool:
    """A file of an executed book: a notebook, the build info or the summary."""
    return _plain(name) and (name.endswith(".ipynb") or name in (INFO_FILE, SUMMARY))


def _list(archive: Path, listed: dict, prefix: str, files: dict, good: Callable) -> None:
    """Add the manifest's `files` {name: {sha256, bytes}} to `listed` as `<prefix><name>`."""
    for rel, meta in files.items():
        ok = good(rel) and isinstance(meta, dict) and isinstance(meta.get("bytes"), int)
        if not ok or not re.fullmatch(r"[0-9a-f]{64}", str(meta.get("sha256"))):
            raise ArchiveError(f"{archive}: the manifest entry {prefix}{rel!r} is malformed")
        if prefix + rel in listed:
            raise ArchiveError(f"{archive}: the manifest lists {prefix}{rel} twice")
        listed[prefix + rel] = meta


def _read(archive: Path, dest: Callable[[str], Path | None] = lambda name: None) -> dict:
    """Read `archive` from end to end and return its manifest (the first member) after checking
    that every other member is a listed regular file with a safe path and the listed size and
    SHA-256, and that none listed is missing. Members for which `dest(name)` gives a path are
    written there (and checked as they are written)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isreg():
                found = first.name if first is not None else "nothing"
                raise ArchiveError(
                    f"{archive}: the first member is {found!r}, not {MANIFEST}; not an igkd "
                    "runs archive"
                )
            if first.size > 64 * _CHUNK:
                raise ArchiveError(
                    f"{archive}: {MANIFEST} is implausibly large ({first.size} bytes)"
                )
            try:
                manifest = json.loads(tar.extractfile(first).read())
            except ValueError as e:
                raise ArchiveError(f"{archive}: {MANIFEST} is not valid JSON ({e})") from e
            listed, seen = _check_manifest(archive, manifest), set()
            while (m := tar.next()) is not None:
                if not _safe_rel(m.name):
                    raise ArchiveError(
                        f"{archive}: member {m.name!r} has an unsafe path (absolute, '..' or "
                        "hidden); refusing the archive"
                    )
                if not m.isreg():
                    raise ArchiveError(
                        f"{archive}: member {m.name!r} is not a regular file (links, folders and "
                        "devices are refused)"
                    )
                if m.name not in listed or m.name in seen:
                    why = "appears twice" if m.name in seen else "is not listed in the manifest"
                    raise ArchiveError(f"{archive}: member {m.name!r} {why}")
                seen.add(m.name)
                f, path, meta = tar.extractfile(m), dest(m.name), listed[m.name]
                sha, n = _write(path, f, m.mtime) if path is not None else _digest(f)
                if (n, sha) != (meta["bytes"], meta["sha256"]):
                    raise ArchiveError(
                        f"{archive}: {m.name} has {n} bytes, SHA-256 {sha[:16]}...; the manifest "
                        f"says {meta['bytes']} bytes, {meta['sha256'][:16]}...: the archive was "
                        "altered or damaged"
                    )
            # To the end of the gzip stream, whose trailer holds the CRC and length of it all.
            while tar.fileobj.read(_CHUNK):
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise ArchiveError(
            f"{archive} is not a readable .tar.gz: truncated or damaged ({e}); copy or export it "
            "again"
        ) from e
    missing = sorted(listed.keys() - seen)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ArchiveError(
            f"{archive}: {missing[0]}{more} listed in the manifest but missing from the archive "
            "(truncated?)"
        )
    return manifest


def _write(path: Path, f: IO[bytes], mtime: float) -> tuple[str, int]:
    """Copy `f` to `path` durably (fsync: the rename that publishes the run must not outlive the
    data) with modification time `mtime`; return (SHA-256, size)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            result = _digest(f, out)
            out.flush()
            os.fsync(out.fileno())
        os.utime(path, (mtime, mtime))  # find_runs orders runs by their DONE's time
    except OSError as e:  # disk full, permissions: not the archive's fault, so say where
        raise ArchiveError(f"cannot write {path}: {e}") from e
    return result


def _existing(archive: Path | str) -> Path:
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise ArchiveError(f"{archive} does not exist or is not a file")
    return archive


def import_runs(archive: Path | str, runs_dir: Path | str | None = None) -> ImportReport:
    """Add the runs of `archive` (written by `export_runs`) to the run cache; overwrite nothing.

    The whole archive is checked against its manifest first (readable, complete, known schema,
    every file listed with matching size and SHA-256, no unsafe paths); any problem raises
    ArchiveError and writes nothing. A run finished here already is skipped; one here unfinished is
    left alone. An executed book in the archive is checked, not imported (see `extract_book`). Each
    imported run gets an `imported.json` (archive, its SHA-256, import time, the archive's git
    revision, machine and creation date).
    """
    archive = _existing(archive)
    manifest = _read(archive)
    with open(archive, "rb") as f:
        archive_sha = _digest(f)[0]
    root = _root(runs_dir)
    report = ImportReport(manifest, root)
    record = {
        "archive": archive.name,
        "archive_sha256": archive_sha,
        "imported_at": _now(),
        **{k: manifest.get(k) for k in ("git_revision", "machine", "created", "igkd_version")},
    }
    root.mkdir(parents=True, exist_ok=True)
    # One import at a time: the leftovers of killed imports can then be removed safely.
    with paths.exclusive(root / ".import.lock", f"importing into {root}"):
        for stale in root.glob(".import-*"):
            shutil.rmtree(stale, ignore_errors=True)
        todo = {}
        for entry in manifest["runs"]:
            target = root / entry["kind"] / entry["hash"]
            if (target / "DONE").is_file():
                report.skipped_existing.append(target)
            elif target.exists():
                report.unfinished_existing.append(target)
            else:
                todo[f"{entry['kind']}/{entry['hash']}"] = target
        if not todo:
            return report
        staging = root / f".import-{os.getpid()}"

        def dest(name: str) -> Path | None:
            return staging / name if "/".join(name.split("/")[:2]) in todo else None

        try:  # checked again as it is written: the archive may have changed since
            if _read(archive, dest) != manifest:
                raise ArchiveError(f"{archive} changed while it was imported; import it again")
            for run, target in todo.items():
                src = staging / run
                text = json.dumps(record, indent=2, sort_keys=True) + "\n"
                paths.atomic_write_bytes(src / "imported.json", text.encode())
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(src, target)  # atomic: the run appears complete or not at all
                except OSError:  # the run appeared meanwhile (computed here by get_or_run)
                    done = (target / "DONE").is_file()
                    (report.skipped_existing if done else report.unfinished_existing).append(target)
                else:
                    report.imported.append(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def extract_book(archive: Path | str, book_dir: Path | str) -> list[Path]:
    """Write the executed book that `archive` carries (`export_runs(book=...)`) into `book_dir`:
    notebooks and `_build_info.json` into `<book_dir>/executed/`, `summary.md` into
    `<book_dir>/summary.md`; return the files written. The whole archive is checked as
    `import_runs` checks it, its book staged in hidden temp files beside their targets; only then
    does each replace its target (atomically). Any problem, or an archive without a book, raises
    ArchiveError and leaves the book folder as it was."""
    archive, book_dir, staged = _existing(archive), Path(book_dir), {}

    def dest(name: str) -> Path | None:
        if not name.startswith(BOOK):
            return None
        rel = name.removeprefix(BOOK)
        target = book_dir / rel if rel == SUMMARY else book_dir / "executed" / rel
        tmp = target.with_name(f".{rel}.{os.getpid()}.tmp")
        staged[tmp] = target
        return tmp

    try:
        if "book" not in _read(archive, dest):
            raise ArchiveError(f"{archive} carries no executed book (igkd runs export --book)")
        for tmp, target in staged.items():  # in the archive's order: the build info last
            os.replace(tmp, target)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    return list(staged.values())
