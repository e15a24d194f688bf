import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from igkd import data, models, pipeline, profiles, runs, train
from igkd.errors import ConfigError


def test_recipe_rejects_bad_values():
    with pytest.raises(ConfigError, match="optimizer='rmsprop'"):
        train.Recipe(epochs=1, batch_size=64, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="epochs=0"):
        train.Recipe(epochs=0, batch_size=64)


def test_warmup_cosine_schedule_shape():
    net = torch.nn.Linear(2, 2)
    r = train.Recipe(
        epochs=1, batch_size=2, optimizer="sgd", lr=1.0, schedule="warmup_cosine", warmup=0.25
    )
    opt = train._optimizer(net, r)
    sched = train._schedule(opt, r, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 25) and max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 24 and lrs[-1] < 0.01


def test_fit_learns_and_reports_final_and_best():
    torch.manual_seed(0)
    tr, te = data.load_synthetic("train", 640), data.load_synthetic("test", 200)
    r = train.Recipe(epochs=3, batch_size=64, optimizer="adam", lr=2e-3)
    m = train.fit(models.student(1122), tr, r, seed=0, test=te, val=te, progress=False)
    assert m["epochs"] == 3 and m["final_train_accuracy"] > 30
    for k in ("final_test_accuracy", "best_test_accuracy", "best_test_epoch", "final_val_accuracy"):
        assert k in m
    assert m["best_test_accuracy"] >= m["final_test_accuracy"]
    # scoring is timed apart from training, since a run's cost is both
    assert 0 < m["eval_seconds"] and 0 < m["train_seconds"]


def test_a_run_resumed_from_history_without_scoring_times_reports_none():
    """Histories written before igkd timed scoring give no total rather than a partial one."""
    rows = [{"epoch": 1, "train_accuracy": 50.0, "images_per_second": 9.0}]
    assert "eval_seconds" not in train._summary(rows, 1.0, "fp32")
    rows.append({**rows[0], "epoch": 2, "eval_seconds": 2.5})
    assert "eval_seconds" not in train._summary(rows, 2.0, "fp32")
    assert train._summary(rows[1:], 1.0, "fp32")["eval_seconds"] == 2.5


def test_fit_reports_the_final_models_per_class_accuracy(tmp_path):
    # the pipeline stores fit's last evaluation instead of evaluating the final model a second time
    tr, te = data.load_synthetic("train", 128), data.load_synthetic("test", 100)
    r = train.Recipe(epochs=1, batch_size=64, optimizer="adam", lr=2e-3)
    net = models.student(1122)
    run = runs.Run("student", {}, tmp_path / "run")
    run.path.mkdir()
    m = train.fit(net, tr, r, seed=0, test=te, run=run, progress=False)
    assert m["per_class_test_accuracy"] == train.evaluate(net, te).per_class
    # resumed after its last epoch, fit trains nothing and evaluates the checkpoint's model
    resumed = train.fit(models.student(1122), tr, r, seed=0, test=te, run=run, progress=False)
    assert resumed["per_class_test_accuracy"] == m["per_class_test_accuracy"]
    assert resumed["final_test_accuracy"] == m["final_test_accuracy"]


def test_teacher_run_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    monkeypatch.setenv("IGKD_DATA", str(tmp_path / "no-data"))
    tiny = profiles.PROFILES["ci"].replace(train_size=300, test_size=100)
    monkeypatch.setitem(profiles.PROFILES, "ci", tiny)
    small = {"epochs": 1, "batch_size": 100}
    with pytest.warns(UserWarning, match="synthetic"):
        first = pipeline.teacher_run("ci", recipe=small, progress=False)
    assert first.done and first.metrics["data"] == "synthetic" and first.metrics["epochs"] == 1
    calls = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1))
    with pytest.warns(UserWarning, match="synthetic"):
        again = pipeline.teacher_run("ci", recipe=small, progress=False)
    assert again.path == first.path and not calls
    assert models.count_parameters(pipeline.load_model(again)) == models.TEACHER_PARAMETERS


SCRIPT = """
import hashlib, json, torch
from igkd import data, models, runs, train
tr = data.load_synthetic("train", 384)
r = train.Recipe(epochs=4, batch_size=64, optimizer="sgd", lr=0.05, schedule="warmup_cosine", warmup=0.25)
def compute(run):
    torch.manual_seed(7)
    net = models.student(1122)  # the smallest student: the same layer types, 1/30 of the FLOPs
    m = train.fit(net, tr, r, seed=1, run=run, progress=False)
    blob = b"".join(v.numpy().tobytes() for v in net.state_dict().values())
    return {**m, "weights": hashlib.sha256(blob).hexdigest()}
print(json.dumps(runs.get_or_run("toy", {"x": 1}, compute).metrics))
"""


def _history(root):
    (path,) = (root / "toy").iterdir()
    rows = [r.split(",") for r in (path / "history.csv").read_text().splitlines()]
    # the times and images/s are wall-clock measurements; everything else must match exactly
    clock = {rows[0].index(c) for c in ("seconds", "images_per_second", "eval_seconds")}
    return [",".join(c for i, c in enumerate(r) if i not in clock) for r in rows]


def test_killed_training_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "IGKD_RUNS": str(tmp_path / "ref")}
    ref = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr
    expected = json.loads(ref.stdout)

    env["IGKD_RUNS"] = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE)
    deadline = time.time() + 240
    while not list((tmp_path / "killed").glob("toy/*/checkpoint.pt")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = (tmp_path / "killed" / "toy").iterdir()
    assert not (run_dir / "DONE").exists()
    resumed = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["weights"] == expected["weights"]
    assert got["final_train_accuracy"] == expected["final_train_accuracy"]
    assert _history(tmp_path / "killed") == _history(tmp_path / "ref")
    attempts = runs.Run("toy", {}, run_dir).read_json("metadata.json")["attempts"]
    assert len(attempts) == 2  # it really was resumed, not recomputed in one go


def test_bf16_exceptions_swap_and_restore():
    """Strided depthwise convs and the stem leave bf16 autocast; classes and weights come back."""
    from torch import nn

    from igkd import models
    from igkd.train import cpu_bf16_exceptions

    model = models.student(4.1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 32, 32)
    with cpu_bf16_exceptions(model, "bf16", torch.device("cpu")):
        swapped = [
            m for m in model.modules() if type(m) is not nn.Conv2d and isinstance(m, nn.Conv2d)
        ]
        assert swapped and all(m.in_channels <= 3 or m.stride != (1, 1) for m in swapped)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(model(x)).all()
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with cpu_bf16_exceptions(model, "fp32", torch.device("cpu")):
        assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))
