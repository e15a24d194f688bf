"""Optuna studies over the distillation weights: validation-scored trials on Dask, resumable."""

from __future__ import annotations

import fcntl
import json
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import tiny_ci_profile

from igkd import sweep, tune
from igkd.errors import ConfigError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IGKD_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv("IGKD_SCHEDULER", raising=False)
    monkeypatch.delenv(tune.STORAGE_ENV, raising=False)
    return tmp_path


@pytest.fixture
def tiny(monkeypatch):
    """The ci profile cut to 200 synthetic images: a teacher, IG maps and trials in seconds."""
    # Two epochs at a high rate: enough to leave chance level, so that trials score apart.
    with tiny_ci_profile(monkeypatch, epochs=2, lr=1e-2) as name:
        yield name


def _metrics(run_path: str) -> dict:
    return json.loads((Path(run_path) / "metrics.json").read_text())


def test_study_scores_on_validation_and_resumes(isolated, tiny, threads_client, monkeypatch):
    kwargs = dict(
        method="KD_IG_AT",
        compression="1122",
        profile=tiny,
        val_fraction=0.25,
        fixed={"teacher_outputs": "cached"},  # one teacher pass per trial, not one per batch
        client=threads_client,
        progress=False,
    )
    with pytest.warns(UserWarning, match="synthetic"):
        first = tune.tune("t", 3, **kwargs)
    assert first.storage == str(isolated / "runs" / "optuna" / "t.log")
    t = first.trials
    assert t["number"].tolist() == [0, 1, 2] and (t["state"] == "COMPLETE").all()
    for _, row in t.iterrows():
        m = _metrics(row["user_attrs_run_path"])
        assert row["value"] == m["final_val_accuracy"]  # the objective is validation accuracy
        assert m["val_images"] == 50 and m["train_images"] == 150
        assert m["settings"]["weights"]["alpha"] == row["params_alpha"]
        for name, (low, high, _) in tune.SPACE.items():
            assert low <= row[f"params_{name}"] <= high
    assert not [c for c in t.columns if "test" in c]  # nothing about the test set is kept
    assert first.best_value == t["value"].max() and set(first.best_params) == set(tune.SPACE)
    assert t["value"].nunique() > 1
    assert set(first.importances) == set(tune.SPACE)
    assert sum(first.importances.values()) == pytest.approx(1)

    # A call killed mid-trial leaves it RUNNING: the next call fails it and retries its parameters.
    dist = {k: optuna.distributions.FloatDistribution(lo, hi, log=lg) for k, (lo, hi, lg) in tune.SPACE.items()}  # fmt: skip
    stale = first.study.ask(dist)

    with pytest.warns(UserWarning, match="synthetic"):
        second = tune.tune("t", 4, **kwargs)
    t = second.trials
    assert t["number"].tolist() == [0, 1, 2, 3, 4]  # the same study, continued
    assert t["state"].tolist() == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    assert t["user_attrs_retry_of"].iloc[4] == stale.number
    assert second.study.trials[4].params == stale.params
    assert (
        t["user_attrs_run_path"].iloc[:3].tolist() == first.trials["user_attrs_run_path"].tolist()
    )

    again = tune.tune("t", 4, **kwargs)  # already complete: nothing runs
    assert len(again.trials) == 5 and again.best_params == second.best_params

    with pytest.raises(ConfigError, match=r"other settings \(val_fraction"):
        tune.tune("t", 5, **{**kwargs, "val_fraction": 0.2})

    # The runs without the journal (as an archive imports them): the study takes its trials from
    # the run cache, and makes no teacher or IG maps, which an archive may lack. Another sampler
    # seed: the trials are not replayed by drawing the same points again (past TPE's seeded random
    # start, draws depend on the order trials finished in).
    Path(first.storage).unlink()
    monkeypatch.setattr(sweep, "_prepare", _nothing_to_make)
    rebuilt = tune.tune("t", 4, **kwargs, sampler_seed=1)
    t = rebuilt.trials
    assert len(t) == 4 and t["user_attrs_status"].eq("reused").all()
    done = second.trials[second.trials["state"] == "COMPLETE"]
    by_run = dict(zip(t["user_attrs_run_path"], t["value"], strict=True))
    assert by_run == dict(zip(done["user_attrs_run_path"], done["value"], strict=True))
    assert rebuilt.best_params == second.best_params


def _nothing_to_make(*args: object) -> str:
    raise AssertionError(f"a cached study made a prerequisite {args}")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"space": {"lr": (1e-4, 1e-2, True)}}, "cannot tune 'lr'"),
        ({"space": {"alpha": (0.0, 0.5, True)}}, "low > 0 on a log scale"),
        ({"space": {}}, "space is empty"),
        ({"objective": "final_test_accuracy"}, "objective='final_test_accuracy'"),
        ({"val_fraction": 0.0}, "val_fraction=0.0"),
        ({"fixed": {"gamma": 0.5}}, r"fixed settings \['gamma'\]"),
        ({"fixed": {"teacher_outputs": "live"}}, "teacher_outputs='live'"),
        ({"method": "distill"}, "method='distill'"),
        ({"study_name": "../x"}, "study_name='../x'"),
    ],
)
def test_bad_arguments_stop_before_a_study_exists(isolated, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tune.tune(**{"study_name": "s", "n_trials": 1, "profile": "ci", **kwargs})
    assert not (isolated / "runs").exists()


def test_storage_location(isolated, monkeypatch):
    _, where = tune.storage_for("abc")
    assert where == str(isolated / "runs" / "optuna" / "abc.log")
    monkeypatch.setenv(tune.STORAGE_ENV, str(isolated / "shared.log"))
    assert tune.storage_for("abc")[1] == str(isolated / "shared.log")
    monkeypatch.setenv(tune.STORAGE_ENV, "postgresql://db/optuna")
    assert tune.storage_for("abc") == ("postgresql://db/optuna", "postgresql://db/optuna")


def test_a_second_call_waits_for_the_first_instead_of_failing_its_trials(
    isolated, tiny, threads_client
):
    # CI ran notebook 09 twice at once (nbval and the book): the second call took the first's
    # running trial for a killed one and failed it under its feet.
    kwargs = dict(
        compression="1122",
        profile=tiny,
        val_fraction=0.25,
        fixed={"teacher_outputs": "cached"},
        client=threads_client,
        progress=False,
    )
    with pytest.warns(UserWarning, match="synthetic"):
        first = tune.tune("shared", 1, **kwargs)
    dist = {k: optuna.distributions.FloatDistribution(lo, hi, log=lg) for k, (lo, hi, lg) in tune.SPACE.items()}  # fmt: skip
    live = first.study.ask(dist)  # a trial another, live call is running
    lock = Path(first.storage + ".igkd-lock")  # not ".lock": Optuna's own symlink lock
    done = threading.Event()
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # that call holds the study
        worker = threading.Thread(
            target=lambda: (tune.tune("shared", 2, **kwargs), done.set()), daemon=True
        )
        worker.start()
        time.sleep(2)
        assert not done.is_set()  # waiting, and the live trial untouched
        assert first.study.trials[live.number].state == optuna.trial.TrialState.RUNNING
        first.study.tell(live, 50.0)  # the live call finishes its trial and lets go
        fcntl.flock(f, fcntl.LOCK_UN)
    worker.join(timeout=300)
    assert done.is_set()
    states = [t.state.name for t in first.study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE"]  # nothing failed; 2 complete: nothing more ran


def test_the_journal_stays_locked_while_trials_run(isolated, tiny, threads_client, monkeypatch):
    # The lock once covered only the sampler's creation, so the waiting test above passed while
    # CI's two executions of notebook 09 still ran trials side by side.
    held = []
    optimise = tune._optimise

    def checking(study, *args, **kwargs):
        with open(tune.storage_for("held")[1] + ".igkd-lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return optimise(study, *args, **kwargs)

    monkeypatch.setattr(tune, "_optimise", checking)
    with pytest.warns(UserWarning, match="synthetic"):
        tune.tune("held", 1, compression="1122", profile=tiny, val_fraction=0.25,
                  fixed={"teacher_outputs": "cached"}, client=threads_client, progress=False)  # fmt: skip
    assert held == [True]
