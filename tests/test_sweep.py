"""Sweeps on Dask: a real scheduler and workers, the run cache across a killed sweep, retries and
failure reports, prerequisites made once, validation before anything runs."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_ci_profile
from distributed import Client

from igkd import cluster as clusters
from igkd import pipeline, runs, sweep
from igkd.errors import ConfigError, SweepError

REPO = Path(__file__).resolve().parents[1]
# The smallest paper student (1122x) without a teacher: a ci run takes seconds on one thread.
FAST = {"method": "student", "profile": "ci", "compression": "1122"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(runs_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a process that runs igkd here: shared runs dir, no CIFAR-10 (the ci
    profile falls back to synthetic data), one torch thread (the machine is shared)."""
    return {
        **os.environ,
        "IGKD_RUNS": str(runs_dir),
        "IGKD_DATA": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _stop(procs: list[subprocess.Popen], grace: float = 20) -> None:
    """Terminate the process groups we started (each Popen leads its own session), then kill."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    for p in procs:  # nannies' worker processes share their group: make sure none is left
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh runs dir and no CIFAR-10 for this test, in this process and in what it starts."""
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IGKD_DATA", str(tmp_path / "no-data"))
    monkeypatch.delenv("IGKD_SCHEDULER", raising=False)
    return tmp_path


# --- a real scheduler and two worker processes ----------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1 sharing one runs dir."""
    root = tmp_path_factory.mktemp("cluster")
    env = _env(root / "runs", root / "no-data")
    address = f"tcp://127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(root / f"{name}.log", "w")  # noqa: SIM115 -- lives as long as the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                env=env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":")[-1],
              "--no-dashboard")  # fmt: skip
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--no-dashboard",
                  "--name", f"w{i}", "--local-directory", str(root / f"w{i}"))  # fmt: skip
        with Client(address, timeout=120, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=180)
        yield address, root
    except Exception:
        for log in sorted(root.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        _stop(procs)


def test_runs_on_a_scheduler_and_two_worker_processes(dask_cluster, monkeypatch):
    address, root = dask_cluster
    monkeypatch.setenv("IGKD_SCHEDULER", address)
    monkeypatch.setenv("IGKD_RUNS", str(root / "runs"))
    configs = [{**FAST, "seed": s} for s in range(3)]

    results = sweep.run_many(configs, progress=False)
    assert [r["status"] for r in results] == ["computed"] * 3
    paths = [Path(r["run_path"]) for r in results]
    assert len(set(paths)) == 3 and all(p.parent == root / "runs" / "student" for p in paths)
    assert [r["environment"]["seed"] for r in results] == [0, 1, 2]  # input order
    assert all(r["data"] == "synthetic" and r["compression"] == "1122" for r in results)
    attempts = [runs.Run("student", {}, p).read_json("metadata.json")["attempts"] for p in paths]
    assert {a[0]["threads"] for a in attempts} == {1}
    assert len({a[0]["pid"] for a in attempts}) == 2  # both worker processes ran runs

    again = sweep.run_many(configs, progress=False)
    assert [r["status"] for r in again] == ["reused"] * 3
    assert [r["run_path"] for r in again] == [r["run_path"] for r in results]

    table = sweep.results_frame(results)
    assert list(table["seed"]) == [0, 1, 2] and set(table["method"]) == {"student"}
    assert table["final_test_accuracy"].between(0, 100).all()
    assert list(table["run_path"]) == [str(p) for p in paths]


# --- a killed sweep ----------------------------------------------------------------------------------

SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from igkd import sweep
    if __name__ == "__main__":  # the local cluster's worker processes import this module too
        configs = json.loads(sys.argv[1])
        results = sweep.run_many(configs, progress=False)  # a local cluster of its own
        print(json.dumps([r["status"] for r in results]), flush=True)
    """
)


def test_killed_sweep_redoes_only_what_is_missing(isolated):
    configs = [{**FAST, "seed": s} for s in range(2)]
    env = _env(isolated / "runs", isolated / "no-data")
    script = isolated / "sweep.py"
    script.write_text(SWEEP_SCRIPT)
    victim = subprocess.Popen(
        [sys.executable, str(script), json.dumps(configs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(isolated / "sweep.log", "w"),  # noqa: SIM115 -- closed with the process
        start_new_session=True,  # its group holds the local cluster's worker process too
    )
    try:
        deadline = time.monotonic() + 600
        while not list((isolated / "runs" / "student").glob("*/DONE")):
            assert victim.poll() is None, (isolated / "sweep.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no run finished in 600 s"
            time.sleep(0.2)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    finally:
        _stop([victim])
    done = list((isolated / "runs" / "student").glob("*/DONE"))
    assert len(done) == 1  # killed after its first run, before its second finished
    first = done[0].parent
    stamp = (first / "DONE").stat().st_mtime_ns, (first / "metrics.json").stat().st_mtime_ns

    with sweep.connect(torch_threads=1) as client:  # a new local cluster in this process
        results = sweep.run_many(configs, client, progress=False)
    statuses = {Path(r["run_path"]): r["status"] for r in results}
    assert statuses.pop(first) == "reused" and list(statuses.values()) == ["computed"]
    assert (
        (first / "DONE").stat().st_mtime_ns,
        (first / "metrics.json").stat().st_mtime_ns,
    ) == stamp
    assert len(runs.Run("student", {}, first).read_json("metadata.json")["attempts"]) == 1
    assert len(list((isolated / "runs" / "student").glob("*/DONE"))) == 2


# --- in-process clusters: retries, reports, prerequisites -------------------------------------------


def test_failed_run_is_retried_then_reported(isolated, threads_client, monkeypatch):
    calls = collections.Counter()
    resumed = []

    def fake_student_run(config, **_run_options):
        seed = config.seed
        calls[seed] += 1

        def compute(run):
            state = run.load_checkpoint()
            if state is not None:
                resumed.append((seed, state))
            run.save_checkpoint({"epoch": 1})
            if seed == 13 or (seed == 7 and calls[7] == 1):
                raise RuntimeError(f"out of memory in run {seed}")
            return {"method": config.method, "final_test_accuracy": 50.0 + seed}

        return runs.get_or_run("toy-student", {"seed": seed}, compute)

    monkeypatch.setattr(pipeline, "student_run", fake_student_run)
    configs = [{**FAST, "seed": s} for s in (0, 7, 13)]

    results = sweep.run_many(configs, threads_client, progress=False, errors="return")
    assert [r["status"] for r in results] == ["computed", "computed", "failed"]
    assert calls == {0: 1, 7: 2, 13: 2}  # one retry each for the failures
    assert (7, {"epoch": 1}) in resumed  # the retry resumed from the checkpoint
    assert results[2]["error"] == "RuntimeError: out of memory in run 13"
    assert "fake_student_run" in results[2]["traceback"] and results[2]["run_path"] is None
    assert results[1]["final_test_accuracy"] == 57.0 and results[2]["config"]["seed"] == 13

    with pytest.raises(
        SweepError, match=r"(?s)1 of 3 runs failed.*\[2\].*seed=13.*out of memory"
    ) as e:
        sweep.run_many(configs, threads_client, retries=0, progress=False)
    assert [r["status"] for r in e.value.results] == ["reused", "reused", "failed"]
    assert calls[13] == 3  # retries=0: tried once more, not twice
    table = sweep.results_frame(e.value.results)
    assert list(table["status"]) == ["reused", "reused", "failed"] and table["error"].iloc[2]


@pytest.fixture
def tiny(monkeypatch):
    """The ci profile cut to 200 synthetic images: a teacher and IG maps in seconds."""
    with tiny_ci_profile(monkeypatch) as name:
        yield name


def test_teacher_and_ig_maps_are_made_once_before_the_students(
    isolated, tiny, threads_client, monkeypatch
):
    from distributed import get_worker

    calls, lock = [], threading.Lock()
    real_teacher_run = pipeline.teacher_run

    def recording_teacher_run(*args, **kwargs):
        run = real_teacher_run(*args, **kwargs)
        with lock:
            calls.append((get_worker().get_current_task(), time.monotonic(), run.computed))
        return run

    monkeypatch.setattr(pipeline, "teacher_run", recording_teacher_run)
    configs = [
        {"method": "KD_IG", "profile": tiny, "compression": "1122"},
        {"method": "KD", "profile": tiny, "compression": "1122", "seed": 1},
        {"method": "student", "profile": tiny, "compression": "1122"},
    ]
    made_from = ("ci", None, None, None, "normalized-zero", ())  # profile's teacher, default IG
    assert sweep.prerequisites(sweep.validate(configs)) == {made_from: True}
    assert sweep.prerequisites(sweep.validate(configs[1:])) == {made_from: False}
    assert sweep.prerequisites(sweep.validate(configs[2:])) == {}

    with pytest.warns(UserWarning, match="synthetic"):
        results = sweep.run_many(configs, threads_client, progress=False)
    assert [r["status"] for r in results] == ["computed"] * 3
    assert calls[0][0].startswith("igkd-prepare-ci-") and calls[0][2]  # trained in the prepare task
    assert all(key.startswith("igkd-run-") and not computed for key, _, computed in calls[1:])
    assert len(calls) == 3  # once by prepare, once by each student that needs the teacher
    for kind in ("teacher", "ig_maps"):
        (done,) = (isolated / "runs" / kind).glob("*/DONE")
        attempts = runs.Run(kind, {}, done.parent).read_json("metadata.json")["attempts"]
        assert len(attempts) == 1


def test_bad_config_stops_before_anything_runs(isolated, monkeypatch):
    monkeypatch.setattr(sweep, "connect", lambda *a, **k: pytest.fail("a cluster was started"))
    good = {**FAST, "seed": 0}
    with pytest.raises(ConfigError, match=r"configs\[1\].*method='distill'"):
        sweep.run_many([good, {**good, "method": "distill"}])
    with pytest.raises(ConfigError, match=r"configs\[0\].*unknown student setting\(s\) \['sed'\]"):
        sweep.run_many([{"sed": 1}])
    with pytest.raises(ConfigError, match=r"configs\[0\].*val_fraction=1\.5"):
        sweep.run_many([{**good, "val_fraction": 1.5}])
    with pytest.raises(ConfigError, match="list of StudentConfigs or dicts"):
        sweep.run_many(good)
    with pytest.raises(ConfigError, match="errors='ignore'"):
        sweep.run_many([good], errors="ignore")
    assert not (isolated / "runs").exists()
    assert sweep.run_many([]) == []


def test_validate_resolves_the_profile_here(monkeypatch):
    monkeypatch.setenv("IGKD_PROFILE", "ci")
    (job,) = sweep.validate([{"method": "KD"}])
    assert job.config.profile == "ci" and job.config.method == "KD"
    assert job.as_dict() == {"compression": "4.1", "method": "KD", "profile": "ci", "seed": 0,
                             "progress": False}  # fmt: skip
    assert sweep.validate([job]) == [job]


def test_local_cluster_gives_each_gpu_worker_its_device_and_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # so that the unset below is undone afterwards
    monkeypatch.delenv("OMP_NUM_THREADS")  # unset: Nanny writes its pre-spawn value here
    # Two torch threads each (no computation runs): not Dask's default of one, which would
    # starve CPU training.
    with (
        sweep.local_cluster(torch_threads=2, gpus=2) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        env = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()))
        assert sorted(env.values()) == [("0", 2), ("1", 2)]
        assert set(client.nthreads().values()) == {1}  # one run at a time per worker
    assert os.environ["OMP_NUM_THREADS"] == "2"  # Nanny's pre-spawn value here is ours too


def test_igkd_workers_sets_the_local_clusters_cpu_workers(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # so that the unset below is undone afterwards
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("IGKD_WORKERS", "2")
    with (
        sweep.local_cluster(gpus=0) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        threads = client.run(torch.get_num_threads)
        assert len(threads) == 2  # two processes sharing the cores between them
        assert set(threads.values()) == {max(1, clusters._cores() // 2)}
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("IGKD_WORKERS", bad)
        with pytest.raises(ConfigError, match=f"IGKD_WORKERS='{bad}'"):
            sweep.local_cluster(gpus=0)
