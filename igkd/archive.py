"""Finished runs that travel: export part of the run cache as one archive, import it elsewhere.

`export_runs` writes a `.tar.gz` whose first member is `manifest.json` (format, schema, creation
date, igkd version, git revision, machine, and every run's files with SHA-256 and size), followed
by `<kind>/<hash>/<file>` for each finished run. Checkpoints, locks and temp files never travel;
IG stores (large memory maps) only when asked; otherwise each store goes as its sample (256 maps spread over it,
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

import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import igkd
from igkd import paths
from igkd.errors import ArchiveError

if TYPE_CHECKING:
    pass

FORMAT, SCHEMA = "igkd-runs", 2  # the newest schema read; an archive without a book is schema 1
MANIFEST = "manifest.json"
# The executed book: its members' prefix, and its files (igkd.book's names; tests check they agree).
BOOK, INFO_FILE, SUMMARY = "executed/", "_build_info.json", "summary.md"
MODELS_USED = "_models_used.txt"  # igkd.book_info's: the models the chapters read back
# ig_store.STORE_KIND and SAMPLE_KIND, not imported: ig_store imports torch, and this module stays
# light so that `igkd runs ...` starts fast (tests check they agree).
IG_KIND, SAMPLE_KIND = "ig_maps", "ig_sample"
META_FILES = ("config.json", "metadata.json", "metrics.json", "history.csv", "DONE")
# Training state (not needed once a run is finished), the lock, and this machine's import record.
NEVER = {"checkpoint.pt", "LOCK", "imported.json"}
_KIND_ORDER = {"teacher": 0, IG_KIND: 1, SAMPLE_KIND: 1, "student": 2}  # dependencies first
_CHUNK = 1 << 20


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
    lean: bool = False,
) -> dict:
    """Write the finished runs of the run cache to the archive `out` (.tar.gz); return its manifest.

    `profile` keeps the runs of one profile (IG stores: that of their teacher, or used by a kept
    student); `kinds` keeps those kinds. `models=False` writes only config, metadata, metrics,
    history, DONE and small result arrays. IG stores travel only with `ig=True` (or `ig_maps` in
    `kinds`), never without models; otherwise a sample of each goes (`ig_store.sample_store`). `book`: an executed book folder (`book/executed`) whose notebooks,
    `_build_info.json` and the `summary.md` beside it travel too (schema 2); ArchiveError when it
    lacks its build info, a notebook of it failed or one is missing. `lean`: model weights travel
    only for the teachers and, with `book`, the runs whose models the book's chapters read back
    (its `_models_used.txt`), with their floating tensors rounded to float16 (the manifest says
    so per run); every other run travels as with `models=False`. With `book` such an archive
    rebuilds its book without training; without, it carries a study's metrics with the teacher
    that the next runs distil from (a few MB), so a study cut short resumes elsewhere. The
    archive appears complete or not at all (temp file, then os.replace).
    """
    from igkd import profiles

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
    if lean and (not models or ig):
        raise ArchiveError(
            "--lean carries the teachers' models (and an executed book's): it excludes "
            "--metrics-only and --ig"
        )
    used = _models_used(Path(book).expanduser()) if lean and book is not None else set()
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
    trained_on = {_config(run).get("ig_run") for _, _, run in chosen}
    wanted = [s for s in stores if profile in (None, _profile(s[2], root)) or s[1] in trained_on]
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
    out.parent.mkdir(parents=True, exist_ok=True)
    # Only a lean export writes files of its own (the float16 models), beside the archive.
    scratch_dir = (
        tempfile.TemporaryDirectory(prefix=".igkd-export-", dir=out.parent)
        if lean
        else contextlib.nullcontext(None)
    )
    with scratch_dir as scratch:
        for kind, h, run in chosen:
            with_models = models and (not lean or kind == "teacher" or f"{kind}/{h}" in used)
            sources = {rel: run / rel for rel in _files(run, with_models)}
            entry: dict[str, Any] = {"kind": kind, "hash": h, "profile": _profile(run, root)}
            if lean and "model.pt" in sources:
                sources["model.pt"] = _half_copy(run, Path(scratch) / f"{kind}-{h}.pt")
                entry["model_dtype"] = "float16"
            entry["files"] = files = _hashed(sources)
            entries.append(entry)
            members += [(f"{kind}/{h}/{rel}", sources[rel], meta) for rel, meta in files.items()]
        return _write(out, entries, members, profile, note, models, lean, book_files)


def _models_used(executed: Path) -> set[str]:
    """The "<kind>/<hash>" lines of the executed book's record of the models its chapters read."""
    record = executed / MODELS_USED
    if not record.is_file():
        raise ArchiveError(
            f"{executed} has no {MODELS_USED} (books executed before igkd recorded which models "
            "the chapters read have none): execute it again with make book (without RESUME=1)"
        )
    return {line.strip() for line in record.read_text().splitlines() if line.strip()}


def _half_copy(run: Path, dest: Path) -> Path:
    """`run`'s model.pt, verified, re-saved at `dest` with floating tensors as float16."""
    from igkd import runs

    state = runs.open_run(run).load_torch("model.pt")
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    dest.write_bytes(runs.envelope(half))
    return dest


def _write(
    out: Path,
    entries: list[dict],
    members: list[tuple[str, Path, dict]],
    profile: str | None,
    note: str | None,
    models: bool,
    lean: bool,
    book_files: dict[str, Path] | None,
) -> dict:
    """Write the manifest and `members` to `out` (temp file, then os.replace); the manifest."""
    from igkd.book import machine  # lazily: book is the notebook tooling

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
        **({"lean": True} if lean else {}),
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


# Import, book extraction and provenance live in their own modules, which import this one; their
# names are resolved here on first use, so any of the three modules can be imported first.
_ELSEWHERE = {
    "ImportReport": "archive_import",
    "_check_manifest": "archive_import",
    "_read": "archive_import",
    "extract_book": "archive_import",
    "import_runs": "archive_import",
    "list_runs": "provenance",
    "provenance": "provenance",
    "revisions": "provenance",
}


def __getattr__(name: str) -> object:
    if name in _ELSEWHERE:
        import importlib

        return getattr(importlib.import_module(f"igkd.{_ELSEWHERE[name]}"), name)
    raise AttributeError(f"module 'igkd.archive' has no attribute {name!r}")
