"""Many student runs at once on Dask distributed, through the run cache (design.md "Scale").

A sweep is a list of `StudentConfig`s (or dicts of their fields), each one `pipeline.student_run`::

    from igkd import sweep
    from igkd.config import StudentConfig
    configs = [StudentConfig(4.1, m, seed=s) for m in ("student", "KD", "KD_IG") for s in range(3)]
    results = sweep.run_many(configs)      # one metrics dict per config, in input order
    table = sweep.results_frame(results)   # method, compression, seed, accuracies, run path

Where runs execute: on the cluster whose scheduler is at $IGKD_SCHEDULER (e.g. tcp://host:8786,
workers started with `dask worker tcp://host:8786 --nthreads 1` and the same IGKD_RUNS and
IGKD_DATA, on a shared filesystem), else on a local cluster that `run_many` starts and stops: one
worker process per GPU, or on a CPU box one worker process whose torch uses all cores, or
$IGKD_WORKERS processes sharing the cores (many small runs: 2 one-thread workers trained 1.4x more
images/s than one two-thread worker on a 2-core CPU).

Every run goes through the run cache: finished runs are reused, a killed sweep started again does
only what is missing (a run cut off mid-training resumes from its last epoch), and two workers
never compute the same run at once (each run directory's flock).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from igkd import pipeline, runs

# Where runs execute (a scheduler's workers or a local cluster): igkd.cluster; re-exported, and
# looked up here at call time so that a test can replace `sweep.connect`.
from igkd.cluster import (  # noqa: F401
    SCHEDULER_ENV,
    WORKERS_ENV,
    check_workers,
    connect,
    local_cluster,
)
from igkd.config import StudentConfig
from igkd.errors import ConfigError, SweepError

if TYPE_CHECKING:
    import pandas as pd
    from distributed import Client, Future

log = logging.getLogger(__name__)

# student_run's arguments that are not StudentConfig fields
_RUN_ONLY = ("data_root", "progress", "purpose")


# --- configs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One student run a sweep submits: its StudentConfig (profile resolved where it was built, so
    a worker whose IGKD_PROFILE or GPU differs runs what the caller meant) and the run-only
    options of `pipeline.student_run`."""

    config: StudentConfig
    data_root: str | None = None
    purpose: dict | None = field(default=None, compare=False)
    progress: bool = False

    def run(self) -> runs.Run:
        return pipeline.student_run(
            self.config, data_root=self.data_root, progress=self.progress, purpose=self.purpose
        )

    def planned(self) -> runs.Run:
        return pipeline.planned_student(self.config, data_root=self.data_root)

    def as_dict(self) -> dict:
        """The job as `student_run` keyword arguments (what result entries show as `config`)."""
        root = {"data_root": self.data_root} if self.data_root is not None else {}
        return {**self.config.kwargs(), **root, "progress": self.progress}


def _job(config: Job | StudentConfig | dict) -> Job:
    if isinstance(config, Job):
        return config
    if isinstance(config, StudentConfig):
        return Job(config)
    if not isinstance(config, dict):
        raise ConfigError(f"a {type(config).__name__}; use a StudentConfig or a dict")
    c = StudentConfig.of({k: v for k, v in config.items() if k not in _RUN_ONLY})
    root = config.get("data_root")
    return Job(c, str(root) if root is not None else None, config.get("purpose"))


def validate(configs: Sequence[Job | StudentConfig | dict]) -> list[Job]:
    """Check every config (a `StudentConfig`, a dict of its fields plus `data_root` and `purpose`,
    or a `Job`) without data or training, and return one `Job` each. A ConfigError names the
    config (by index) and the bad value."""
    if isinstance(configs, dict) or not isinstance(configs, Sequence):
        raise ConfigError("configs must be a list of StudentConfigs or dicts of their fields")
    out = []
    for i, config in enumerate(configs):
        try:
            out.append(_job(config))
        except ConfigError as e:
            raise ConfigError(f"configs[{i}] {config}: {e}") from None
    return out


# What a config's teacher and IG maps are made from: (profile, data root, teacher checkpoint,
# IG steps, IG baseline, the images of a store of its own: its splits' items, else ()). Configs
# that share it share their prerequisites.
Prerequisite = tuple[str, "str | None", "str | None", "int | None", str, tuple]


def _needs(job: Job) -> tuple[Prerequisite, bool, bool]:
    """(what its teacher and IG maps are made from, needs the teacher, needs the IG maps)."""
    c = job.config
    own = tuple(sorted(c.splits.items())) if pipeline.own_ig_store(c) else ()
    key = (c.profile, job.data_root, c.teacher_checkpoint, c.ig_n_steps, c.ig_baseline, own)
    return key, c.needs_teacher, c.needs_ig


def prerequisites(jobs: Sequence[Job]) -> dict[Prerequisite, bool]:
    """{(profile, data root, teacher checkpoint, IG steps, IG baseline, own images): whether the
    IG maps are needed} for the unfinished jobs that need a teacher: what must exist before their
    students can start."""
    out: dict[Prerequisite, bool] = {}
    for job in jobs:
        key, teacher, ig = _needs(job)
        # A finished student (e.g. imported from an archive) needs nothing made first.
        if teacher and not job.planned().done:
            out[key] = out.get(key, False) or ig
    return out


# --- what the workers execute ----------------------------------------------------------------------


def _prepare(
    profile: str,
    data_root: str | None,
    teacher_checkpoint: str | None,
    ig_n_steps: int | None,
    ig_baseline: str,
    own: tuple,
    ig: bool,
) -> str:
    """Worker task: get or make the teacher (and IG maps) of a prerequisite; returns the teacher
    run dir."""
    teacher = pipeline.teacher_run(
        profile, data_root=data_root, progress=False, teacher_checkpoint=teacher_checkpoint
    )
    if ig:
        images = pipeline.student_images(profile, dict(own), data_root) if own else None
        pipeline.ig_run(
            profile, teacher=teacher, n_steps=ig_n_steps, baseline=ig_baseline, images=images,
            data_root=data_root, progress=False,
        )  # fmt: skip
    return str(teacher.path)


def _student(job: Job, _after: Any = None) -> dict:
    """Worker task: the student run of `job`; `_after` (a prerequisite's result) only orders it."""
    run = job.run()
    return {"run_path": str(run.path), "computed": run.computed, "metrics": run.metrics}


def prepare(
    client: Client, jobs: Sequence[Job], *, retries: int = 1, prepared: dict | None = None
) -> dict:
    """Submit one task per distinct teacher (and IG maps) that validated `jobs` need, unless
    `prepared` (this function's earlier result, updated in place) has one. Returns
    {prerequisite (`prerequisites`' keys): (future, makes the IG maps)}."""
    prepared = {} if prepared is None else prepared
    for key, ig in prerequisites(jobs).items():
        if key not in prepared or (ig and not prepared[key][1]):
            future = client.submit(_prepare, *key, ig, retries=retries, key=_key("prepare", key[0]))
            prepared[key] = (future, ig)
    return prepared


def submit(
    client: Client, jobs: Sequence[Job], *, retries: int = 1, prepared: dict | None = None
) -> tuple[list[Future], dict]:
    """Submit validated configs: their prerequisites first (`prepare`), then the students, each
    starting once its teacher (and IG maps) exist. Returns (student futures in input order,
    the prerequisites as `prepare` returns them, for the next call)."""
    prepared = prepare(client, jobs, retries=retries, prepared=prepared)
    futures = []
    for job in jobs:
        key, teacher, _ = _needs(job)
        after = prepared[key][0] if teacher and key in prepared else None
        futures.append(client.submit(_student, job, after, retries=retries, key=_key("run")))
    return futures, prepared


def _key(what: str, detail: str | None = None) -> str:
    """A fresh task key: the same config submitted again (say after a failure) runs again."""
    import uuid

    return f"igkd-{what}{'-' + detail if detail else ''}-{uuid.uuid4().hex[:12]}"


def _describe(job: Job) -> str:
    shown = job.config.kwargs()
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _error(future: Future) -> tuple[str, str]:
    """(one-line error, traceback text) of a future that did not finish."""
    import traceback

    try:
        exc = future.exception()
        tb = future.traceback()
    except Exception as e:  # cancelled or lost: the future itself cannot say more
        return f"{type(e).__name__}: {e}", ""
    text = "".join(traceback.format_exception(type(exc), exc, tb)) if tb is not None else ""
    return f"{type(exc).__name__}: {exc}", text


def result_entry(future: Future, job: Job) -> dict:
    """What `run_many` reports for a job's ended future: its metrics and status, or the error;
    `config` is the job as `student_run` keyword arguments."""
    config = job.as_dict()
    if future.status == "finished":
        out = future.result()
        return {
            **out["metrics"],
            "status": "computed" if out["computed"] else "reused",
            "run_path": out["run_path"],
            "error": None,
            "traceback": None,
            "config": config,
        }
    message, text = _error(future)
    return {
        "status": "failed",
        "run_path": None,
        "error": message,
        "traceback": text,
        "config": config,
    }


# --- the sweep -------------------------------------------------------------------------------------


def run_many(
    configs: Sequence[StudentConfig | dict | Job],
    client: Client | None = None,
    *,
    retries: int = 1,
    progress: bool = True,
    errors: str = "raise",
    purpose: dict | None = None,
) -> list[dict]:
    """Run every config (a `StudentConfig`, a dict of its fields with `data_root`/`purpose`, or a
    `Job`) on Dask; return one entry per config, in input order.

    An entry is the run's metrics.json plus `status` ("computed" now or "reused" from the run
    cache, or "failed"), `run_path`, `error` (None, or the exception in one line), `traceback`
    and `config` (as run: profile resolved, progress off).

    All configs are validated before anything runs. The teacher and IG maps that configs need are
    made first, once per profile, by one task each. A run that raises is retried `retries` times
    (resuming from its last checkpoint). With `errors="raise"` (the default) a SweepError naming
    the failed runs is raised once every run has ended, so that a result table never silently
    lacks runs; its `results` attribute holds all entries. `errors="return"` returns the failed
    entries in the list instead. Either way the finished runs are cached: fix the cause and call
    again, and only the missing runs are computed.

    `purpose` (`config.purpose(...)`) tags every run that has none in its config with the
    experiment it serves, new or reused. `client` None uses `connect()` ($IGKD_SCHEDULER or a
    local cluster started for this call).
    """
    if errors not in ("raise", "return"):
        raise ConfigError(f"errors={errors!r}; use 'raise' or 'return'")
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries={retries!r}; use a non-negative integer")
    configs = validate(configs)
    if purpose is not None:  # for the jobs whose config names none
        configs = [c if c.purpose is not None else replace(c, purpose=purpose) for c in configs]
    if not configs:
        return []
    if client is None:
        with connect() as own:
            return run_many(configs, own, retries=retries, progress=progress, errors=errors)

    from distributed import as_completed
    from tqdm.auto import tqdm

    check_workers(client)
    futures, _ = submit(client, configs, retries=retries)
    where = {f.key: i for i, f in enumerate(futures)}
    results: list[dict] = [{} for _ in configs]
    counts = {"computed": 0, "reused": 0, "failed": 0}
    with tqdm(total=len(futures), desc="runs", unit="run", disable=not progress) as bar:
        for future in as_completed(futures, loop=client.loop):
            i = where[future.key]
            entry = result_entry(future, configs[i])
            status = entry["status"]
            if status == "failed":
                log.warning(
                    "run %d (%s) failed: %s\n%s",
                    i,
                    _describe(configs[i]),
                    entry["error"],
                    entry["traceback"],
                )
            results[i] = entry
            counts[status] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update()
    failed = [i for i, r in enumerate(results) if r["status"] == "failed"]
    if failed and errors == "raise":
        lines = [f"  [{i}] {_describe(configs[i])}: {results[i]['error']}" for i in failed[:10]]
        more = f"\n  ... and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise SweepError(
            f"{len(failed)} of {len(results)} runs failed after {retries} "
            f"retr{'y' if retries == 1 else 'ies'}:\n" + "\n".join(lines) + more + "\n"
            "The other runs are cached: fix the cause and run the sweep again; only the missing "
            "runs are computed (the exception's .results holds every entry).",
            results,
        )
    return results


def results_frame(results: Sequence[dict]) -> pd.DataFrame:
    """One row per run: method, compression, seed, the settings a sweep varies, accuracies (%),
    training time, status and run path (failed runs keep their config and error)."""
    import pandas as pd

    rows = []
    for r in results:
        c = r.get("config", {})
        s = r.get("settings") or {}
        w = s.get("weights") or {}
        rows.append(
            {
                "method": r.get("method", c.get("method", "KD_IG")),
                "compression": r.get("compression", c.get("compression")),
                "compression_ratio": r.get("compression_ratio"),
                "seed": c.get("seed", 0),
                "profile": c.get("profile"),
                "alpha": w.get("alpha"),
                "temperature": w.get("temperature"),
                "overlay_prob": w.get("overlay_prob"),
                "gamma": w.get("gamma"),
                "train_fraction": s.get("train_fraction", 1.0) if s else None,
                "split_seed": s.get("split_seed"),
                "epochs": r.get("epochs"),
                "final_test_accuracy": r.get("final_test_accuracy"),
                "best_test_accuracy": r.get("best_test_accuracy"),
                "final_val_accuracy": r.get("final_val_accuracy"),
                "best_val_accuracy": r.get("best_val_accuracy"),
                "train_seconds": r.get("train_seconds"),
                "data": r.get("data"),
                "status": r.get("status"),
                "error": r.get("error"),
                "run_path": r.get("run_path"),
            }
        )
    return pd.DataFrame(rows)
