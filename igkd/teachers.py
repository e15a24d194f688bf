"""Which teacher a run distils from: the profile's own trained run, or a given checkpoint file.

The paper distilled from one fixed teacher (huyvnphan's CIFAR-10 MobileNet-V2, 93.91 %), not from
one it trained. `teacher_checkpoint` names such a file everywhere a teacher is used: a local path or
an http(s) URL, optionally pinned with pip's fragment syntax, `path_or_url#sha256=<64 hex>`. When
no argument is given, $IGKD_TEACHER is used, and when that is unset, the profile trains its own.

A given file becomes a teacher run like any other (kind `teacher`), named by the file's SHA-256
and the test set it was scored on. Every IG store, KD target and AT map then comes from it, and
since students and IG stores name their teacher run in their config, the file's hash is part of
every dependent run's cache key: another file, another set of runs.

    teachers.run_of("weights/mobilenet_v2.pt", test_ds)   # the teacher run of that file
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from igkd import checkpoints, data, profiles, runs, train
from igkd.errors import ConfigError

ENV = "IGKD_TEACHER"
_PIN = re.compile(r"^(?P<src>.+?)#sha256=(?P<sha>[0-9a-fA-F]*)$")


def given(teacher_checkpoint: str | Path | None = None) -> str | None:
    """The teacher file asked for: `teacher_checkpoint`, else $IGKD_TEACHER, else None (the
    profile's own teacher run). An empty string also means the profile's own teacher."""
    spec = teacher_checkpoint if teacher_checkpoint is not None else os.environ.get(ENV)
    if spec is None or str(spec).strip() == "":
        return None
    parse(spec)  # one-line error for a malformed pin, before anything is read
    return str(spec)


def parse(spec: str | Path) -> tuple[str, str | None]:
    """(path or URL, expected SHA-256 or None) of `path_or_url[#sha256=<64 hex>]`."""
    text = str(spec).strip()
    m = _PIN.match(text)
    if m is None:
        return text, None
    sha = m["sha"].lower()
    if len(sha) != 64:
        raise ConfigError(
            f"teacher_checkpoint={text!r}: the pin must be #sha256= followed by 64 hex digits "
            f"(got {len(sha)}); `sha256sum FILE` prints it"
        )
    return m["src"], sha


def local_file(spec: str | Path) -> tuple[Path, str]:
    """(local path, SHA-256) of the teacher file `spec`: a URL is downloaded once into
    `<data>/checkpoints/teacher/`; a pinned hash that does not match is refused (CheckpointError)."""
    src, want = parse(spec)
    hint = f", or unset it (and ${ENV}) to use the profile's teacher run"
    path = checkpoints.teacher_file(src, want, hint)
    got = want or checkpoints.sha256_of(path)  # teacher_file has checked a pinned hash
    return path.resolve(), got


def config(sha256: str, test_ds: data.Dataset) -> dict:
    """The run cache's config of the teacher run of the file with hash `sha256`. The recipe records
    only its input space (the huyvnphan teacher takes CIFAR-normalised images)."""
    return {
        "model": "teacher",
        "checkpoint_sha256": sha256,
        "recipe": {"normalized": True},
        "test_data": test_ds.fingerprint,
    }


def planned(spec: str | Path, test_ds: data.Dataset) -> runs.Run:
    """The teacher run of file `spec` as the cache names it, finished or not (the file is read,
    and downloaded when a URL, for its hash; nothing is evaluated). A file not yet made into a
    run is checked against the teacher's architecture now, so that a student that names it fails
    with one CheckpointError before anything is trained."""
    path, sha = local_file(spec)
    run = runs.Run.for_config("teacher", config(sha, test_ds))
    if not run.done:
        checkpoints.load_teacher(path)
    return run


def run_of(spec: str | Path, test_ds: data.Dataset, profile: str | None = None) -> runs.Run:
    """The finished teacher run of file `spec`: the weights checked against the teacher's
    architecture (one CheckpointError naming the mismatch, before any student trains), scored on
    `test_ds` (final_test_accuracy and per-class accuracy, %), and stored as model.pt."""
    path, sha = local_file(spec)

    def compute(run: runs.Run) -> dict:
        model = checkpoints.load_teacher(
            path
        )  # raises for a file of another architecture or layout
        ev = train.evaluate(model, test_ds, normalized=True)
        run.save_torch("model.pt", model.state_dict())
        return {
            "final_test_accuracy": ev.accuracy,
            "best_test_accuracy": ev.accuracy,
            "per_class_test_accuracy": ev.per_class,
            "epochs": 0,
            "train_seconds": 0.0,
            "checkpoint": str(spec),
            "checkpoint_sha256": sha,
            "data": test_ds.source,
            "test_images": len(test_ds),
            "environment": profiles.environment(profile),
        }

    return runs.get_or_run("teacher", config(sha, test_ds), compute)
