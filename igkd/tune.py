"""Hyperparameter search with Optuna over the distillation weights, scored on a validation split.

The paper chose alpha and T by a grid of 45 runs scored on the test set (paper.md 6), which makes
the reported test accuracy of the chosen setting optimistic. Here each trial is a student run with
`val_fraction` of the training set held out (`pipeline.student_run(val_fraction=...)`), the score
is its validation accuracy, and the test set is never read. Trials run on Dask through
`igkd.sweep`, so they are cached runs like any other: a trial repeated (or resumed after a kill)
costs nothing that was already done.

    result = tune.tune("kd_ig_at", n_trials=40)   # continue the study up to 40 complete trials
    result.best_params, result.importances, result.trials

The study lives in a journal file `<IGKD_RUNS>/optuna/<study>.log` (or in $IGKD_OPTUNA_STORAGE: a
journal file path, or a database URL such as postgresql://... that many machines share).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igkd import hp_grids, models, paths, runs, sweep
from igkd.config import purpose
from igkd.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from distributed import Client

log = logging.getLogger(__name__)

STORAGE_ENV = "IGKD_OPTUNA_STORAGE"

# (low, high, log scale) of each tunable weight: the range of the paper's grids (igkd.hp_grids,
# paper.md 6): alpha 0.0005-0.25 and T 1.5-4 (KD, 45 runs), p 0.05-0.75 (with > 0.25 reported to
# hurt), the AT weight gamma 0.1-0.9.
_RANGE = {k: v for g in hp_grids.GRIDS.values() for k, v in g.axes.items()}
SPACE: dict[str, tuple[float, float, bool]] = {
    k: (min(_RANGE[k]), max(_RANGE[k]), k == "alpha")
    for k in ("alpha", "temperature", "overlay_prob", "gamma")
}
# What the paper's grid search chose (on the test set), for comparison with the study's best.
PAPER_CHOICE = dict(hp_grids.CHOSEN)
OBJECTIVES = ("final_val_accuracy", "best_val_accuracy")
# What a trial keeps of its run's metrics: validation numbers only, the test set plays no part.
_TRIAL_METRICS = (*OBJECTIVES, "train_seconds")
_CONTROLLED = {"method", "compression", "profile", "seed", "val_fraction", "epochs", "progress"}


@dataclass
class TuneResult:
    """The study after `tune`: best trial, parameter importances and every trial as a table."""

    study: optuna.Study
    best_params: dict[str, float]
    best_value: float  # validation accuracy (%) of the best trial
    best_run: str | None  # run directory of the best trial
    importances: dict[str, float]  # fANOVA importance of each parameter, summing to 1
    trials: pd.DataFrame
    storage: str  # where the study is stored (file path or database URL)


def storage_for(study_name: str, storage: str | None = None) -> tuple[Any, str]:
    """(optuna storage, description) of `storage`, else $IGKD_OPTUNA_STORAGE, else the journal file
    `<runs>/optuna/<study_name>.log`. A value with "://" is a database URL; anything else a journal
    file path."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    where = storage or os.environ.get(STORAGE_ENV) or None
    if where and "://" in where:
        return where, where
    path = Path(where).expanduser() if where else paths.runs_dir() / "optuna" / f"{study_name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), str(path)


def _check_space(space: dict) -> dict[str, tuple[float, float, bool]]:
    out = {}
    for name, bounds in space.items():
        if name not in SPACE:
            raise ConfigError(f"cannot tune {name!r}; tunable: {', '.join(SPACE)}")
        try:
            low, high, logscale = bounds
            low, high, logscale = float(low), float(high), bool(logscale)
        except (TypeError, ValueError):
            raise ConfigError(f"space[{name!r}]={bounds!r}; use (low, high, log)") from None
        if not low < high or (logscale and low <= 0):
            raise ConfigError(
                f"space[{name!r}]={bounds!r}; need low < high (and low > 0 on a log scale)"
            )
        out[name] = (low, high, logscale)
    if not out:
        raise ConfigError("space is empty; give at least one of " + ", ".join(SPACE))
    return out


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs a line per trial; the progress bar says the same, once."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def tune(
    study_name: str = "kd_ig_at",
    n_trials: int = 20,
    *,
    method: str = "KD_IG_AT",
    compression: float | str = 4.1,
    profile: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    epochs: int | None = None,
    space: dict[str, tuple[float, float, bool]] | None = None,
    objective: str = "final_val_accuracy",
    fixed: dict | None = None,
    parallel: int | None = None,
    sampler_seed: int = 0,
    storage: str | None = None,
    client: Client | None = None,
    retries: int = 1,
    progress: bool = True,
) -> TuneResult:
    """Run (or continue) the Optuna study `study_name` until it holds `n_trials` complete trials.

    Each trial draws the parameters of `space` (default SPACE: alpha, temperature, overlay_prob,
    gamma) with TPE and trains `method` at `compression` under `profile` with `val_fraction` of
    the training set held out; its value is the run's `objective` (validation accuracy, %,
    maximised). All trials share `seed`, hence the initial weights and the validation split, so
    they differ only in the parameters. `fixed` holds other student_run settings (e.g.
    teacher_outputs). Up to `parallel` trials run at once on the Dask `client` (default: as many
    as it has worker threads; no client: `sweep.connect()`).

    Running again continues the same study; its settings must be the same (a ConfigError says
    which differ). Finished runs of the cache that were trials of this study, but that it does not
    hold (its journal left behind when they came in an archive, or deleted), join it first as
    complete trials, so that they are not trained again. Trials left running by a killed call are
    marked failed and their parameters tried again first (their runs resume from the cache); two
    calls on one journal file take turns (the second waits for the first), two on one database
    study must not overlap. A trial whose run fails (after `retries`) is recorded as failed.
    """
    import optuna

    if not isinstance(study_name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", study_name):
        raise ConfigError(f"study_name={study_name!r}; use letters, digits, '_', '-' and '.'")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"n_trials={n_trials!r}; use a positive integer")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r}; use one of {', '.join(OBJECTIVES)}")
    if not (isinstance(val_fraction, float) and 0 < val_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction!r}; tuning needs a fraction in (0, 1)")
    space = _check_space(dict(SPACE if space is None else space))
    fixed = dict(fixed or {})
    clash = sorted(set(fixed) & (_CONTROLLED | set(space)))
    if clash:
        raise ConfigError(f"fixed settings {clash} are tune() arguments or tuned; pass them so")
    base = {
        "method": method,
        "compression": compression,
        "profile": profile,
        "seed": seed,
        "val_fraction": val_fraction,
        **({"epochs": epochs} if epochs is not None else {}),
        **fixed,
    }
    # Validate before creating anything: the corners of the space must make valid runs.
    corners = [{**base, **{k: b[i] for k, b in space.items()}} for i in (0, 1)]
    corners = sweep.validate(corners)
    base["profile"] = corners[0].config.profile
    # Each trial's run records that it is one (the summary page leaves tuning trials out).
    base["purpose"] = purpose("tuning", base["profile"], study=study_name)
    settings = json.loads(
        json.dumps(
            {
                "method": method,
                "compression": models.compression_row(compression).label,
                "profile": base["profile"],
                "seed": seed,
                "val_fraction": val_fraction,
                "epochs": epochs,
                "objective": objective,
                "space": space,
                "fixed": fixed,
            },
            default=str,
        )
    )

    store, where = storage_for(study_name, storage)
    # One tune() per journal at a time: a second call (another notebook, a test) waits, then finds
    # the study done or continues it; without this its stale-trial recovery would fail the first
    # call's running trials. A database study is shared by design: the caller coordinates.
    # (Not "<journal>.lock": that is the symlink Optuna's file backend locks each write with.)
    lock = (
        paths.exclusive(Path(where + ".igkd-lock"), f"study {study_name!r} ({where})")
        if store is not where
        else contextlib.nullcontext()
    )
    with lock:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar
            sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)
        with _quiet_optuna():
            study = optuna.create_study(
                study_name=study_name,
                storage=store,
                sampler=sampler,
                direction="maximize",
                load_if_exists=True,
            )
            stored = study.user_attrs.get("igkd_settings")
            if stored is None:
                study.set_user_attr("igkd_settings", settings)
            elif stored != settings:
                differ = sorted(k for k in settings if stored.get(k) != settings[k])
                raise ConfigError(
                    f"study {study_name!r} in {where} was made with other settings ({', '.join(differ)}:"
                    f" {[stored.get(k) for k in differ]}, now {[settings[k] for k in differ]}); "
                    "use another study_name or the same settings"
                )
            _recover_stale(study)
            adopted = _adopt(study, base, space, objective)
            if adopted:
                log.info("study %r: %d trials taken from finished runs", study_name, adopted)
            if client is None:
                with sweep.connect() as own:
                    _optimise(
                        study, base, space, objective, n_trials, own, parallel, retries, progress
                    )
            else:
                _optimise(
                    study, base, space, objective, n_trials, client, parallel, retries, progress
                )
            return _result(study, where)


def _recover_stale(study: optuna.Study) -> None:
    """Trials still RUNNING belong to a call that was killed: fail them, queue their parameters."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.info(
            "trial %d was left running by an earlier call; trying its parameters again", t.number
        )


def _adopt(
    study: optuna.Study, base: dict, space: dict[str, tuple[float, float, bool]], objective: str
) -> int:
    """Add to `study` as complete trials the finished runs of the cache that were trials of it
    (tagged with its purpose, settings `base`, weights inside `space`) but that it does not hold:
    a journal left behind when the runs travelled in an archive, or deleted. Oldest first; returns
    how many were added. Without this, a study past TPE's seeded random start would draw new
    points and train them although its trials are all here."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    known = {
        Path(t.user_attrs["run_path"]).name
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("run_path")
    }
    dists = {k: FloatDistribution(lo, hi, log=lg) for k, (lo, hi, lg) in space.items()}
    added = 0
    for run in runs.find_runs("student"):
        if run.path.name in known or base["purpose"] not in run.purposes:
            continue
        weights = run.config.get("method") or {}
        params = {k: weights.get(k) for k in space}
        if not all(
            isinstance(v, float) and lo <= v <= hi
            for v, (lo, hi, _) in zip(params.values(), space.values(), strict=True)
        ):
            continue
        (job,) = sweep.validate([{**base, **params}])
        if job.planned().path.name != run.path.name:  # a trial of other settings of this name
            continue
        m = run.metrics
        attrs = {k: m.get(k) for k in _TRIAL_METRICS}
        study.add_trial(
            create_trial(
                params=params,
                distributions=dists,
                value=m[objective],
                user_attrs={**attrs, "run_path": str(run.path), "status": "reused"},
            )
        )
        added += 1
    return added


def _n_complete(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _optimise(
    study: optuna.Study,
    base: dict,
    space: dict[str, tuple[float, float, bool]],
    objective: str,
    n_trials: int,
    client: Client,
    parallel: int | None,
    retries: int,
    progress: bool,
) -> None:
    """Ask, run on Dask and tell trials, keeping up to `parallel` in flight, until the study has
    `n_trials` complete trials or this call has run that many more."""
    from distributed import as_completed
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    to_run = n_trials - _n_complete(study)
    if to_run <= 0:
        return
    sweep.check_workers(client)
    parallel = parallel or max(1, sum(client.nthreads().values()))
    # Prerequisites (teacher, IG maps) are made when the first trial whose run is not cached is
    # submitted, and shared by the later ones: a study rebuilt over imported runs (its journal
    # left behind) replays its seeded trials from the cache and makes no IG store.
    prepared: dict = {}
    running = as_completed([], loop=client.loop)
    trials: dict[str, tuple[optuna.Trial, dict]] = {}

    def launch() -> None:
        trial = study.ask()
        params = {k: trial.suggest_float(k, lo, hi, log=lg) for k, (lo, hi, lg) in space.items()}
        (config,) = sweep.validate([{**base, **params}])
        (future,), _ = sweep.submit(client, [config], retries=retries, prepared=prepared)
        trials[future.key] = (trial, config)
        running.add(future)

    launched = 0
    for _ in range(min(parallel, to_run)):
        launch()
        launched += 1
    with tqdm(total=to_run, desc=f"trials of {study.study_name}", disable=not progress) as bar:
        for future in running:
            trial, config = trials.pop(future.key)
            entry = sweep.result_entry(future, config)
            if entry["status"] == "failed":
                trial.set_user_attr("error", entry["error"])
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, entry["error"])
            else:
                for key in _TRIAL_METRICS:
                    trial.set_user_attr(key, entry[key])
                trial.set_user_attr("run_path", entry["run_path"])
                trial.set_user_attr("status", entry["status"])
                study.tell(trial, entry[objective])
            bar.update()
            if launched < to_run:
                launch()
                launched += 1


def _result(study: optuna.Study, where: str) -> TuneResult:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    complete = _n_complete(study)
    if complete == 0:
        raise ConfigError(
            f"study {study.study_name!r} has no complete trial; see the trials' errors"
        )
    importances: dict[str, float] = {}
    if complete >= 2:
        try:
            importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
        except (ValueError, RuntimeError) as e:  # e.g. every trial scored the same
            warnings.warn(f"no parameter importances for {study.study_name!r}: {e}", stacklevel=3)
    best = study.best_trial
    trials = study.trials_dataframe(
        attrs=("number", "value", "state", "params", "user_attrs", "duration")
    )
    return TuneResult(
        study=study,
        best_params=dict(best.params),
        best_value=float(best.value),
        best_run=best.user_attrs.get("run_path"),
        importances={k: float(v) for k, v in importances.items()},
        trials=trials,
        storage=where,
    )
