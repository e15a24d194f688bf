"""The run cache: hashing, caching, corruption detection, locking, and resuming after SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import igkd
from igkd import runs
from igkd.errors import CheckpointError, ConfigError
from igkd.runs import Run, config_hash, find_runs, get_or_run


@pytest.fixture(autouse=True)
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


# --- hashing --------------------------------------------------------------------------------------


def test_hash_is_stable_and_ignores_key_order() -> None:
    a = config_hash("student", {"lr": 1e-3, "model": {"layers": 5, "width": 1.0}, "seed": 0})
    b = config_hash("student", {"seed": 0, "model": {"width": 1.0, "layers": 5}, "lr": 1e-3})
    assert a == b and len(a) == 16 and int(a, 16) >= 0
    assert config_hash("student", {"x": (1, 2)}) == config_hash("student", {"x": [1, 2]})


def test_hash_is_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    base = config_hash("student", {"lr": 1e-3, "seed": 0})
    assert config_hash("student", {"lr": 1e-3, "seed": 1}) != base
    assert config_hash("student", {"lr": 1e-3, "seed": 0, "extra": None}) != base
    assert config_hash("teacher", {"lr": 1e-3, "seed": 0}) != base
    monkeypatch.setattr(igkd, "__version__", "999")
    assert config_hash("student", {"lr": 1e-3, "seed": 0}) != base


def test_unserialisable_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.act"):
        config_hash("student", {"model": {"act": torch.nn.ReLU}})
    with pytest.raises(ConfigError, match=r"lr"):
        config_hash("student", {"lr": float("nan")})
    with pytest.raises(ConfigError, match="keys must be str"):
        config_hash("student", {"per_class": {1: 0.5}})


# --- caching --------------------------------------------------------------------------------------


def test_get_or_run_caches(runs_dir: Path) -> None:
    calls = []

    def fn(run: Run) -> dict:
        calls.append(run.path)
        run.append_history({"epoch": 1, "loss": torch.tensor(0.5)})
        return {"accuracy": 91.5}

    run = get_or_run("toy", {"seed": 0}, fn)
    again = get_or_run("toy", {"seed": 0}, fn)
    assert len(calls) == 1 and again.path == run.path
    assert run.computed and not again.computed  # what a sweep reports as computed or reused
    assert run.path.parent == runs_dir / "toy" and run.done and again.metrics == {"accuracy": 91.5}
    assert json.loads((run.path / "config.json").read_text())["config"] == {"seed": 0}
    meta = json.loads((run.path / "metadata.json").read_text())
    assert meta["attempts"][0]["torch"] == torch.__version__
    assert (run.path / "history.csv").read_text() == "epoch,loss\n1,0.5\n"
    assert [r.path for r in find_runs("toy")] == [run.path]
    get_or_run("toy", {"seed": 1}, fn)
    assert len(calls) == 2 and len(find_runs("toy")) == 2


def test_cached_result_computes_once_and_refuses_damaged_arrays() -> None:
    import numpy as np

    calls = []

    def compute() -> tuple[dict, dict]:
        calls.append(1)
        return {"accuracy": 61.5}, {
            "right": np.array([True, False, True]),
            "maps": np.ones((2, 4, 4)),
        }

    run, arrays = runs.cached_result("own", {"seed": 0}, compute)
    again, back = runs.cached_result("own", {"seed": 0}, compute)
    assert (
        calls == [1] and run.computed and not again.computed and again.metrics["accuracy"] == 61.5
    )
    assert back["right"].tolist() == [True, False, True] and back["maps"].shape == (2, 4, 4)
    assert sorted(arrays) == ["maps", "right"]
    file = run.path / runs.ARRAYS
    file.write_bytes(file.read_bytes()[:-20])  # truncated
    with pytest.raises(CheckpointError, match="arrays.npz is corrupt"):
        runs.cached_result("own", {"seed": 0}, compute)
    file.unlink()
    with pytest.raises(CheckpointError, match="delete the run directory"):
        runs.cached_result("own", {"seed": 0}, compute)
    assert calls == [1]


def test_failed_run_is_not_done_and_resumes() -> None:
    def crash(run: Run) -> dict:
        run.save_checkpoint({"epoch": 1})
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        get_or_run("toy", {"seed": 0}, crash)
    assert not Run.for_config("toy", {"seed": 0}).done and find_runs("toy") == []
    resumed = []
    get_or_run("toy", {"seed": 0}, lambda run: resumed.append(run.load_checkpoint()) or {})
    assert resumed == [{"epoch": 1}]


def test_history_follows_the_checkpoint() -> None:
    # Rows appended after the last checkpoint belong to lost work: resuming drops them.
    run = Run.for_config("toy", {"seed": 0})
    run.append_history({"epoch": 1})
    run.save_checkpoint({"epoch": 1})
    run.append_history({"epoch": 2})
    assert len(run.path.joinpath("history.csv").read_text().splitlines()) == 3
    fresh = Run.for_config("toy", {"seed": 0})
    assert fresh.load_checkpoint() == {"epoch": 1} and fresh.history == [{"epoch": 1}]
    assert fresh.path.joinpath("history.csv").read_text() == "epoch\n1\n"


# --- corruption -----------------------------------------------------------------------------------


def test_missing_checkpoint_is_none() -> None:
    assert Run.for_config("toy", {}).load_checkpoint() is None


def test_truncated_checkpoint_raises() -> None:
    run = Run.for_config("toy", {"seed": 0})
    run.save_checkpoint({"w": torch.randn(1000)})
    file = run.path / "checkpoint.pt"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt is corrupt.*delete the run directory"):
        run.load_checkpoint()


def test_flipped_byte_in_checkpoint_raises() -> None:
    run = Run.for_config("toy", {"seed": 0})
    w = torch.zeros(10_000)
    run.save_checkpoint({"w": w})
    file = run.path / "checkpoint.pt"
    data = bytearray(file.read_bytes())
    # Change one byte of the tensor data: zip metadata stays valid, only the checksum can tell.
    data[data.index(bytes(4000)) + 100] = 1
    file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        run.load_checkpoint()


def test_mismatched_config_is_detected() -> None:
    run = get_or_run("toy", {"seed": 0}, lambda run: {"accuracy": 1.0})
    stored = json.loads((run.path / "config.json").read_text())
    stored["config"]["seed"] = 1
    (run.path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(CheckpointError, match="hash collision or tampered"):
        get_or_run("toy", {"seed": 0}, lambda run: {"accuracy": 1.0})


def test_done_without_readable_metrics_raises() -> None:
    run = get_or_run("toy", {"seed": 0}, lambda run: {"accuracy": 1.0})
    (run.path / "metrics.json").write_text('{"accur')
    with pytest.raises(CheckpointError, match="metrics.json is corrupt"):
        get_or_run("toy", {"seed": 0}, lambda run: {"accuracy": 1.0})


# --- concurrency and crashes ----------------------------------------------------------------------


def test_second_caller_waits_and_reuses_the_result() -> None:
    started, release, calls = threading.Event(), threading.Event(), []

    def slow(run: Run) -> dict:
        calls.append(1)
        started.set()
        release.wait(10)
        return {"accuracy": 2.0}

    first = threading.Thread(target=get_or_run, args=("toy", {"seed": 0}, slow))
    first.start()
    assert started.wait(10)
    result = []
    second = threading.Thread(target=lambda: result.append(get_or_run("toy", {"seed": 0}, slow)))
    second.start()
    time.sleep(0.3)
    assert not result  # blocked on the lock, not computing
    release.set()
    first.join(10)
    second.join(10)
    assert calls == [1] and result[0].metrics == {"accuracy": 2.0}


# A deterministic toy training: a linear model, SGD with momentum (optimiser state matters) and a
# seeded generator for the minibatches (RNG state matters). Each epoch is checkpointed.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys, time
    import torch
    from igkd.runs import get_or_run

    torch.set_num_threads(1)
    pause = float(sys.argv[1])

    def train(run):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(256, 8, generator=torch.Generator().manual_seed(2))
        noise = torch.randn(256, generator=torch.Generator().manual_seed(3))
        y = x @ torch.arange(8.0) + 0.1 * noise
        start = 0
        state = run.load_checkpoint()
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["rng"])
            start = state["epoch"]
        print("start", start, flush=True)
        for epoch in range(start + 1, 7):
            for idx in torch.randperm(256, generator=gen).split(32):
                loss = torch.nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            run.append_history({"epoch": epoch, "loss": loss.item()})
            run.save_checkpoint(
                {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "rng": gen.get_state(), "epoch": epoch}
            )
            print("saved", epoch, flush=True)
            time.sleep(pause)
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        return {"weights_sha256": hashlib.sha256(weights.numpy().tobytes()).hexdigest(),
                "loss": loss.item()}

    run = get_or_run("toy", {"seed": 0}, train)
    print("done", run.path, flush=True)
    """
)


def _start(script: Path, runs: Path, pause: float) -> subprocess.Popen:
    env = {**os.environ, "IGKD_RUNS": str(runs)}
    return subprocess.Popen(
        [sys.executable, str(script), str(pause)], env=env, stdout=subprocess.PIPE, text=True
    )


def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    reference = _start(script, tmp_path / "reference", 0.0)  # runs alongside the killed one

    victim = _start(script, tmp_path / "killed", 0.3)
    for line in victim.stdout:
        if line.strip() == "saved 2":
            victim.send_signal(signal.SIGKILL)
            break
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    killed_run = next((tmp_path / "killed" / "toy").iterdir())
    assert not (killed_run / "DONE").exists() and not (killed_run / "metrics.json").exists()

    resumed = subprocess.run(
        [sys.executable, str(script), "0"],
        env={**os.environ, "IGKD_RUNS": str(tmp_path / "killed")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    start = int(resumed.stdout.split()[1])
    assert start >= 2  # work up to the last checkpoint is kept

    out, _ = reference.communicate(timeout=60)
    assert reference.returncode == 0 and out.startswith("start 0")
    ref_run = next((tmp_path / "reference" / "toy").iterdir())
    assert ref_run.name == killed_run.name
    assert json.loads((killed_run / "metrics.json").read_text()) == json.loads(
        (ref_run / "metrics.json").read_text()
    )
    with open(killed_run / "history.csv") as f:
        killed_history = list(csv.DictReader(f))
    with open(ref_run / "history.csv") as f:
        assert killed_history == list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in killed_history] == [1, 2, 3, 4, 5, 6]
    assert runs.Run("toy", {}, killed_run).metrics["loss"] > 0


def test_purposes_are_recorded_once_and_outside_the_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    run = runs.get_or_run("student", {"x": 1}, lambda r: {"ok": True})
    assert run.purposes == []
    a, b = {"experiment": "ablation", "profile": "ci"}, {"experiment": "sweep", "profile": "ci"}
    run.add_purpose(a)
    run.add_purpose(b)
    run.add_purpose(a)
    again = runs.get_or_run("student", {"x": 1}, lambda r: pytest.fail("recomputed"))
    assert again.path == run.path and again.purposes == [a, b]
    (run.path / runs.PURPOSES_FILE).write_text("{damaged")
    assert run.purposes == []  # informative only: a damaged file reads as untagged
