"""The content-addressed run cache: a config maps to `<runs>/<kind>/<hash>/`, computed once.

A run directory holds `config.json` (written first), `metadata.json` (versions, host and git
revision of every attempt), `checkpoint.pt` (every epoch), `history.csv`, any artefacts the run
writes, and `metrics.json` then `DONE` (written last). Every file is replaced atomically, so
killing a run at any moment loses at most the work since its last checkpoint and never leaves a run
that looks finished.
`get_or_run` returns a finished run, resumes an unfinished one, or starts it; a lock file keeps two
processes (on one machine or on a shared filesystem) from computing the same run at once.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import json
import logging
import os
import platform
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import igkd
from igkd import paths
from igkd.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

_ENVELOPE_FORMAT = 1  # version of the checksummed wrapper that `save_torch` writes


def _first_bad_value(obj: Any, where: str = "") -> str | None:
    """Dotted path of the first value in `obj` that JSON cannot represent canonically, if any."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{where}.{k}" if where else str(k)
            if not isinstance(k, str):  # json.dumps would turn 1 into "1": two configs, one hash
                return f"{key} (key of type {type(k).__name__}; keys must be str)"
            bad = _first_bad_value(v, key)
            if bad:
                return bad
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad = _first_bad_value(v, f"{where}[{i}]")
            if bad:
                return bad
        return None
    if obj is None or isinstance(obj, (str, bool, int)):
        return None
    if isinstance(obj, float):
        return None if obj == obj and abs(obj) != float("inf") else f"{where} (= {obj})"
    return f"{where} (a {type(obj).__name__}; use str, int, float, bool, None, list or dict)"


def _canonical_json(obj: Any, what: str) -> str:
    """Sorted-key, whitespace-free JSON of `obj`; ConfigError naming the first bad value."""
    bad = _first_bad_value(obj)
    if bad:
        raise ConfigError(f"{what} is not JSON-serialisable at {bad}")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_hash(kind: str, config: dict) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of kind, config and igkd version.

    Tuples hash like lists and 1 differs from 1.0. The data a run uses belongs in `config` (e.g. a
    data fingerprint), so that new data means a new run.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"config is a {type(config).__name__}; expected a dict")
    text = _canonical_json(
        {"kind": kind, "config": config, "igkd_version": igkd.__version__}, "config"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not kind or kind.startswith(".") or "/" in kind or "\\" in kind:
        raise ConfigError(f"run kind {kind!r} must be a plain name such as 'teacher'")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """0-d tensors and NumPy scalars -> Python numbers, so history rows can be written as text."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value


PURPOSES_FILE = "purposes.json"


def envelope(obj: Any, **meta: str) -> bytes:
    """The bytes of `Run.save_torch`'s file for `obj`: {"igkd_envelope", "sha256", "payload" (the
    torch.save bytes of `obj` as a uint8 tensor), **meta}, torch.saved."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = bytearray(buf.getbuffer())
    wrapped = {
        "igkd_envelope": _ENVELOPE_FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(payload, dtype=torch.uint8),
        **meta,
    }
    out = io.BytesIO()
    torch.save(wrapped, out)
    return out.getvalue()


@dataclass(eq=False)
class Run:
    """One run directory: its kind, its config and where it lives (`<runs>/<kind>/<hash>`)."""

    kind: str
    config: dict
    path: Path
    history: list[dict] = field(default_factory=list, repr=False)  # rows of history.csv
    computed: bool = field(default=False, repr=False)  # get_or_run finished it (not the cache)

    @classmethod
    def for_config(cls, kind: str, config: dict) -> Run:
        """The run of `config` in the current runs dir (nothing is created on disk)."""
        _check_kind(kind)
        return cls(kind, config, paths.runs_dir() / kind / config_hash(kind, config))

    @property
    def done(self) -> bool:
        """True once the run has finished (its DONE file exists)."""
        return (self.path / "DONE").is_file()

    @property
    def metrics(self) -> dict:
        """The finished run's metrics.json."""
        return self.read_json("metrics.json")

    def _corrupt(self, file: Path, why: str) -> CheckpointError:
        return CheckpointError(
            f"{file} is corrupt ({why}); delete the run directory {self.path} to restart this run"
        )

    # --- JSON files -------------------------------------------------------------------------------

    def write_json(self, name: str, obj: Any) -> None:
        """Atomically write `obj` as indented JSON to `<run>/<name>`."""
        bad = _first_bad_value(obj)
        if bad:
            raise ConfigError(f"{name} for run {self.path} is not JSON-serialisable at {bad}")
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
        paths.atomic_write_bytes(self.path / name, text.encode())

    def read_json(self, name: str) -> Any:
        """The JSON in `<run>/<name>`; CheckpointError if it is missing or unreadable."""
        file = self.path / name
        try:
            return json.loads(file.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{file} does not exist") from None
        except (OSError, ValueError) as e:
            raise self._corrupt(file, str(e)) from e

    # --- torch files with a checksum --------------------------------------------------------------

    def save_torch(self, name: str, obj: Any, **meta: str) -> None:
        """Atomically torch.save `obj` to `<run>/<name>`, wrapped with its SHA-256.

        The file is a small dict {"igkd_envelope", "sha256", "payload" (uint8 tensor of the
        torch.save bytes), **meta}, so the checksum and the data are replaced in one step: there is
        no moment at which a sidecar checksum belongs to another version of the file.
        """
        paths.atomic_write_bytes(self.path / name, envelope(obj, **meta))

    def _load_envelope(self, name: str) -> dict | None:
        file = self.path / name
        if not file.exists():
            return None
        try:
            env = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or damaged archive: torch raises various types
            raise self._corrupt(file, f"cannot be read: {e}") from e
        if not isinstance(env, dict) or env.get("igkd_envelope") != _ENVELOPE_FORMAT:
            raise self._corrupt(file, "not a checksummed igkd file")
        payload = env["payload"].numpy().tobytes()
        if hashlib.sha256(payload).hexdigest() != env["sha256"]:
            raise self._corrupt(file, "SHA-256 does not match its contents")
        env["payload"] = payload
        return env

    def _unpack(self, name: str, payload: bytes, map_location: Any) -> Any:
        try:
            return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        except Exception as e:  # checksum was fine, so the content itself is not loadable safely
            raise CheckpointError(
                f"{self.path / name} is intact but cannot be loaded with weights_only=True ({e}); "
                "store only tensors, numbers, strings and plain containers in it"
            ) from e

    def load_torch(self, name: str, map_location: Any = "cpu") -> Any:
        """What `save_torch` stored in `<run>/<name>`, verified; None if the file does not exist."""
        env = self._load_envelope(name)
        return None if env is None else self._unpack(name, env["payload"], map_location)

    # --- checkpoints and history ------------------------------------------------------------------

    def save_checkpoint(self, state: dict) -> None:
        """Atomically save `state` (model, optimiser, RNG states, epoch...) as checkpoint.pt.

        The history rows appended so far are stored with it, so that a resumed run's history.csv
        matches its checkpoint (no rows of an epoch that was lost).
        """
        self.save_torch("checkpoint.pt", state, history=json.dumps(self.history))

    def load_checkpoint(self, map_location: Any = "cpu") -> dict | None:
        """The last saved state, or None before the first checkpoint.

        Restores `history` (and history.csv) to what it was at that checkpoint. A truncated,
        damaged or tampered checkpoint raises CheckpointError; it is never silently ignored.
        """
        env = self._load_envelope("checkpoint.pt")
        if env is None:
            return None
        state = self._unpack("checkpoint.pt", env["payload"], map_location)
        self.history = json.loads(env.get("history", "[]"))
        self._write_history()
        return state

    def append_history(self, row: dict) -> None:
        """Add one row (e.g. an epoch's losses, accuracies) and rewrite history.csv atomically."""
        self.history.append({k: _plain(v) for k, v in row.items()})
        self._write_history()

    def _write_history(self) -> None:
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        paths.atomic_write_bytes(self.path / "history.csv", buf.getvalue().encode())

    # --- lifecycle --------------------------------------------------------------------------------

    def _write_or_verify_config(self) -> None:
        """Write config.json, or check that the one on disk is this run's config."""
        file = self.path / "config.json"
        mine = {"kind": self.kind, "config": self.config}
        if not file.exists():
            self.write_json("config.json", mine)
            return
        found = self.read_json("config.json")
        if _canonical_json(found, "config.json") != _canonical_json(mine, "config"):
            raise CheckpointError(
                f"{file} does not hold the config whose hash names this directory (hash collision "
                f"or tampered run dir); delete {self.path} to restart this run"
            )

    def _record_attempt(self) -> None:
        """Append this process's versions, host, device and start time to metadata.json."""
        meta_file = self.path / "metadata.json"
        try:
            meta = self.read_json("metadata.json") if meta_file.exists() else {}
        except CheckpointError:  # metadata is informative only: start a fresh record
            meta = {}
        meta.setdefault("created", _now())
        meta.setdefault("attempts", []).append(
            {
                "started": _now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "igkd": igkd.__version__,
                "git_revision": paths.git_revision(),
                "threads": torch.get_num_threads(),
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "argv": sys.argv,
            }
        )
        self.write_json("metadata.json", meta)

    def finish(self, metrics: dict) -> None:
        """Write metrics.json, then DONE: a run is finished exactly when DONE exists."""
        if not isinstance(metrics, dict):
            raise ConfigError(f"metrics is a {type(metrics).__name__}; expected a dict")
        self.write_json("metrics.json", metrics)
        paths.atomic_write_bytes(self.path / "DONE", f"{_now()}\n".encode())

    # --- what the run was for ------------------------------------------------------------------

    @property
    def purposes(self) -> list[dict]:
        """The experiments this run was made or reused for (`purposes.json`): each a dict with
        "experiment" and that experiment's parameters; [] for a run never tagged."""
        try:
            found = self.read_json(PURPOSES_FILE) if (self.path / PURPOSES_FILE).exists() else []
        except CheckpointError:
            return []
        return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []

    def add_purpose(self, purpose: dict) -> None:
        """Record that the run serves `purpose` (kept once; the file is not part of the hash, so
        one run can serve several experiments, e.g. the ablation and the sweep's 4.1x point)."""
        with self._locked():
            found = self.purposes
            if purpose not in found:
                self.write_json(PURPOSES_FILE, [*found, purpose])

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold an exclusive flock on `<run>/LOCK`; waits while another process holds it."""
        return paths.exclusive(self.path / "LOCK", f"run {self.path}")


def get_or_run(kind: str, config: dict, fn: Callable[[Run], dict]) -> Run:
    """The finished run of (`kind`, `config`), computing it with `fn(run)` if needed.

    `fn` should resume from `run.load_checkpoint()` when that is not None, call
    `run.save_checkpoint(...)` after every epoch (or chunk), and return the run's metrics dict.
    """
    run = Run.for_config(kind, config)
    if not run.done:
        with run._locked():
            if not run.done:  # another process may have finished it while we waited
                run._write_or_verify_config()
                # Temp files of a writer killed mid-write; nobody else writes here while we hold
                # the lock.
                for tmp in run.path.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                run._record_attempt()
                run.finish(fn(run))
                run.computed = True
                return run
    run._write_or_verify_config()
    run.metrics  # noqa: B018 -- a finished run whose metrics are unreadable is an error now
    return run


ARRAYS = "arrays.npz"  # `cached_result`'s arrays: not *.pt, so a metrics-only archive keeps them


def cached_result(
    kind: str, config: dict, compute: Callable[[], tuple[dict, dict[str, np.ndarray]]]
) -> tuple[Run, dict[str, np.ndarray]]:
    """(run, arrays) of an experiment computed once per `config` by `compute()`, which returns
    (metrics, {name: array}): the metrics go to metrics.json, the arrays (small: they travel in
    every archive) to arrays.npz. An experiment that trains models the cache does not otherwise
    know (chapter 12's) is then read back on the next execution, here or from an imported archive.
    `config` must name everything the result depends on; metrics holding `environment`
    (`profiles.environment`) let `igkd runs export --profile` find the run. A damaged arrays.npz
    raises CheckpointError."""
    import zipfile

    def fn(run: Run) -> dict:
        metrics, arrays = compute()
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        paths.atomic_write_bytes(run.path / ARRAYS, buf.getvalue())
        return metrics

    run = get_or_run(kind, config, fn)
    try:
        with np.load(run.path / ARRAYS, allow_pickle=False) as z:
            return run, {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise run._corrupt(run.path / ARRAYS, f"unreadable ({e})") from None


def open_run(run_dir: str | Path) -> Run:
    """The run stored in directory `run_dir` (any runs dir, any igkd version), read from its
    config.json. Raises CheckpointError when it is not a run directory."""
    path = Path(run_dir).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a run directory (no config.json)")
    stored = Run(path.parent.name, {}, path).read_json("config.json")
    return Run(stored.get("kind", path.parent.name), stored.get("config", {}), path)


def find_runs(kind: str) -> list[Run]:
    """The finished runs of `kind` in the runs dir, oldest first.

    Includes runs made by other igkd versions (whose directory name is not the current hash).
    """
    _check_kind(kind)
    runs = []
    for done in (paths.runs_dir() / kind).glob("*/DONE"):
        path = done.parent
        stored = Run(kind, {}, path).read_json("config.json")
        runs.append(Run(kind, stored["config"], path))
    return sorted(runs, key=lambda r: (r.path / "DONE").stat().st_mtime)
