"""Finished runs that travel: export part of the run cache as one archive, import it elsewhere.

`export_runs` writes a `.tar.gz` whose first member is `manifest.json` (format, schema, creation
date, igkd version, git revision, machine, and every run's files with SHA-256 and size), followed
by `<kind>/<hash>/<file>` for each finished run. Checkpoints, locks and temp files never travel;
IG stores (large memory maps) only when asked; otherwise each store goes as its sample (its first maps,
`ig_store.sample_store`), enough for chapter 02's figures. `import_runs` reads the whole archive and checks it
against its manifest before it writes anything, then adds the runs the cache lacks and overwrites
nothing. A run is staged in `<runs>/.import-<pid>/` and renamed into `<runs>/<kind>/<hash>` only when
complete: the staging area is outside the kind folders because `runs.find_runs` globs `*/DONE`,
which also matches hidden folders. A killed import leaves complete runs and a staging area, which
the next import removes.

The run cache's hash covers kind, config and igkd version, not the git revision, so imported runs
are cache hits for a checkout with the same igkd version. Which revision computed a run stays in
its metadata.json (every attempt's `git_revision`); `provenance` and `revisions` read it back, so
report tables can say which code made the numbers.

With `book` (`igkd runs export --book`), the archive also carries the executed book: the notebooks
and `_build_info.json` of `book/executed/` and `book/summary.md`, as `executed/<name>`, listed under
the manifest's "book" and verified like the runs. Such an archive has schema 2 (a reader of schema
1 would not know the book is there); one without a book is still written as schema 1, and both are
read. `extract_book` verifies the whole archive, then writes its book where `igkd.book` builds it.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import igkd
from igkd import paths
from igkd.errors import ArchiveError

if TYPE_CHECKING:
    from igkd.runs import Run

FORMAT, SCHEMA = "igkd-runs", 2  # the newest schema read; an archive without a book is schema 1
MANIFEST = "manifest.json"
# The executed book: its members' prefix, and its files (igkd.book's names; tests check they agree).
BOOK, INFO_FILE, SUMMARY = "executed/", "_build_info.json", "summary.md"
# ig_store.STORE_KIND and SAMPLE_KIND, not imported: ig_store imports torch, and this module stays
# light so that `igkd runs ...` starts fast (tests check they agree).
IG_KIND, SAMPLE_KIND = "ig_maps", "ig_sample"
META_FILES = ("config.json", "metadata.json", "metrics.json", "history.csv", "DONE")
# Training state (not needed once a run is finished), the lock, and this machine's import record.
NEVER = {"checkpoint.pt", "LOCK", "imported.json"}
_KIND_ORDER = {"teacher": 0, IG_KIND: 1, SAMPLE_KIND: 1, "student": 2}  # dependencies first
_CHUNK = 1 << 20


@dataclass
class ImportReport:
    """What `import_runs` did: run directories added, already finished here, or left alone because
    an unfinished run of that config is here (being computed, or killed)."""

    manifest: dict
    runs_dir: Path
    imported: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    unfinished_existing: list[Path] = field(default_factory=list)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _root(runs_dir: Path | str | None) -> Path:
    return Path(runs_dir).expanduser().resolve() if runs_dir is not None else paths.runs_dir()


def _read_json(file: Path) -> Any:
    """The JSON in `file`, or None when it is missing or unreadable (informative files only)."""
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


def _plain(name: object) -> bool:
    """A single path component that cannot escape or hide: no separators, not '.', '..', hidden."""
    return isinstance(name, str) and bool(name) and not re.search(r"[/\\\0]|^\.", name)


def _safe_rel(name: object) -> bool:
    """A relative POSIX path made of plain components (no absolute path, no '..', no backslash)."""
    return isinstance(name, str) and all(_plain(p) for p in name.split("/"))


def _finished(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(kind, hash, path) of every finished run under `root`, dependencies' kinds first."""
    if not root.is_dir():
        return
    kinds = [d for d in root.iterdir() if d.is_dir() and _plain(d.name) and d.name != "cache"]
    for kind_dir in sorted(kinds, key=lambda d: (_KIND_ORDER.get(d.name, 3), d.name)):
        for run in sorted(kind_dir.iterdir()):
            if _plain(run.name) and (run / "DONE").is_file() and (run / "config.json").is_file():
                yield kind_dir.name, run.name, run


def _config(run: Path) -> dict:
    return (_read_json(run / "config.json") or {}).get("config", {})


def _profile(run: Path, root: Path) -> str | None:
    """The profile a run was made for; an IG store's (or sample's) is that of its teacher."""
    if run.parent.name in (IG_KIND, SAMPLE_KIND):
        teacher = _config(run).get("teacher_run")
        return _profile(root / "teacher" / teacher, root) if _plain(teacher) else None
    env = (_read_json(run / "metrics.json") or {}).get("environment")
    return env.get("profile") if isinstance(env, dict) else None


def _files(run: Path, models: bool) -> list[str]:
    """Relative names of the files of `run` that travel, DONE last; without `models`, no model
    weights (*.pt), which leaves a run's metrics, history and small result arrays."""
    # Hidden names are the temp files of atomic writes; links could point anywhere.
    names = [f.name for f in run.iterdir() if f.is_file() and not f.is_symlink()]
    return sorted(
        (n for n in names if _plain(n) and n not in NEVER and (models or not n.endswith(".pt"))),
        key=lambda n: (n == "DONE", n),
    )


def _digest(f: IO[bytes], out: IO[bytes] | None = None) -> tuple[str, int]:
    """(SHA-256, size) of what `f` yields, copying it to `out` on the way if given."""
    h, n = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
        if out is not None:
            out.write(chunk)
    return h.hexdigest(), n


class _Hashing:
    """A file reader that hashes what tarfile copies, so that a file changed since the manifest
    was computed is caught instead of archived under a wrong checksum."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.h.update(chunk)
        return chunk


def _hashed(files: dict[str, Path]) -> dict[str, dict]:
    """{name: {"sha256", "bytes"}} of the files {name: path}."""
    listed = {}
    for rel, path in files.items():
        with open(path, "rb") as f:
            listed[rel] = dict(zip(("sha256", "bytes"), _digest(f), strict=True))
    return listed


def _book_files(executed: Path) -> dict[str, Path]:
    """The files of the executed book in `executed` that travel, {name: path}: its notebooks (not
    the unexecuted stand-ins a book build copies in), `summary.md` beside the folder if there is
    one, and `_build_info.json`. ArchiveError unless it is a complete build without failures."""
    import nbformat

    from igkd.book import NOT_EXECUTED, _error_of

    info = _read_json(executed / INFO_FILE)
    if not isinstance(info, dict) or not isinstance(info.get("notebooks"), dict):
        raise ArchiveError(
            f"{executed} has no readable {INFO_FILE}: not an executed book (make book writes one)"
        )
    files = {}
    for path in sorted(executed.glob("*.ipynb")):
        if not _plain(path.name) or path.is_symlink() or not path.is_file():
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{path} is not a readable notebook ({type(e).__name__})") from e
        if error := _error_of(nb):
            raise ArchiveError(f"{path} failed ({error}): an archive must not carry a broken book")
        if not nb.metadata.get(NOT_EXECUTED):
            files[path.name] = path
    if missing := sorted(info["notebooks"].keys() - files.keys()):
        raise ArchiveError(
            f"{executed}: {', '.join(missing)} of {INFO_FILE} missing or not executed; an archive "
            "must not carry an incomplete book"
        )
    if (executed.parent / SUMMARY).is_file():
        files[SUMMARY] = executed.parent / SUMMARY
    return {**files, INFO_FILE: executed / INFO_FILE}


def _samples(stores: list[tuple[str, str, Path]], root: Path) -> list[tuple[str, str, Path]]:
    """(kind, hash, path) of the finished sample of each store, made if missing."""
    from igkd import ig_store, paths, runs

    out = []
    with paths.runs_dir_override(root):
        for _, _, path in stores:
            sample = ig_store.sample_store(runs.open_run(path))
            out.append((SAMPLE_KIND, sample.path.name, sample.path))
    return out


def export_runs(
    out: Path | str,
    *,
    profile: str | None = None,
    kinds: Sequence[str] | None = None,
    models: bool = True,
    ig: bool = False,
    runs_dir: Path | str | None = None,
    note: str | None = None,
    book: Path | str | None = None,
) -> dict:
    """Write the finished runs of the run cache to the archive `out` (.tar.gz); return its manifest.

    `profile` keeps the runs of one profile (IG stores: that of their teacher, or used by a kept
    student); `kinds` keeps those kinds. `models=False` writes only config, metadata, metrics,
    history, DONE and small result arrays. IG stores travel only with `ig=True` (or `ig_maps` in
    `kinds`), never without models; otherwise a sample of each goes (`ig_store.sample_store`). `book`: an executed book folder (`book/executed`) whose notebooks,
    `_build_info.json` and the `summary.md` beside it travel too (schema 2); ArchiveError when it
    lacks its build info, a notebook of it failed or one is missing. The archive appears complete
    or not at all (temp file, then os.replace).
    """
    from igkd import profiles
    from igkd.book import machine  # lazily: book is the notebook tooling

    root, out = _root(runs_dir), Path(out).expanduser()
    profile = profiles.resolve(profile) if profile is not None else None
    for k in kinds or ():
        if not _plain(k):
            raise ArchiveError(f"run kind {k!r} must be a plain name such as 'teacher'")
    ig = ig or IG_KIND in (kinds or ())
    if ig and not models:
        raise ArchiveError(
            "IG stores travel with their maps: --ig and --metrics-only exclude each other"
        )
    book_files = _book_files(Path(book).expanduser()) if book is not None else None
    chosen, stores = [], []
    for kind, h, run in _finished(root):
        if kind == IG_KIND:
            stores.append((kind, h, run))
        elif (kinds is None or kind in kinds) and (
            profile is None or _profile(run, root) == profile
        ):
            chosen.append((kind, h, run))
    # After the students: the stores of the profile, or that a chosen student was trained on, go
    # along whole with `ig`, else as their samples (made now if missing; half a megabyte each).
    used = {_config(run).get("ig_run") for _, _, run in chosen}
    wanted = [s for s in stores if profile in (None, _profile(s[2], root)) or s[1] in used]
    chosen = [c for c in chosen if c[0] != SAMPLE_KIND]  # derived from the stores: made below
    if ig:
        chosen += wanted
    elif wanted and chosen and (kinds is None or SAMPLE_KIND in kinds):
        chosen += _samples(wanted, root)
    chosen.sort(key=lambda r: _KIND_ORDER.get(r[0], 3))
    if not chosen:
        which = f" of profile {profile}" if profile else ""
        which += f" of kind {', '.join(kinds)}" if kinds else ""
        raise ArchiveError(f"no finished runs{which} to export in {root}")

    entries, members = [], []  # members: (name in the archive, file, {sha256, bytes})
    for kind, h, run in chosen:
        files = _hashed({rel: run / rel for rel in _files(run, models)})
        entries.append({"kind": kind, "hash": h, "profile": _profile(run, root), "files": files})
        members += [(f"{kind}/{h}/{rel}", run / rel, meta) for rel, meta in files.items()]
    manifest = {
        "format": FORMAT,
        "schema": 1 if book_files is None else 2,
        "created": _now(),
        "igkd_version": igkd.__version__,
        "git_revision": paths.git_revision(),
        "machine": machine(),
        "profile": profile,
        "note": note,
        "metrics_only": not models,
        "runs": entries,
    }
    if book_files is not None:
        manifest["book"] = _hashed(book_files)
        members += [(BOOK + rel, book_files[rel], m) for rel, m in manifest["book"].items()]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            # Our own GzipFile: tarfile's would record the temp file's name in the gzip header.
            with (
                gzip.GzipFile(out.name.removesuffix(".gz"), "wb", 6, raw) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                text = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(text), time.time(), 0o644
                tar.addfile(info, io.BytesIO(text))
                for name, path, meta in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = meta["bytes"], path.stat().st_mtime, 0o644
                    with open(path, "rb") as f:
                        reader = _Hashing(f)
                        tar.addfile(info, reader)
                    if reader.h.hexdigest() != meta["sha256"]:
                        raise ArchiveError(f"{path} changed while it was exported; retry")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest


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
