"""Integrated gradients against Captum, and the IG-map store: alignment, cache, refusal, resume."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters

from igkd import attribution, data, ig_store, models, runs
from igkd.attribution import ig_map, integrated_gradients
from igkd.errors import CheckpointError, ConfigError
from igkd.ig_store import load_ig_maps, precompute_ig


def calibrated_teacher(seed: int = 0) -> torch.nn.Module:
    """A random teacher whose BatchNorm statistics are set from data, in eval mode.

    Freshly initialised, the teacher's logits are ~1e-10 and almost linear in the input, which
    would make every comparison trivial; with calibrated BN statistics and a default-initialised
    classifier its logits are O(0.1) and strongly non-linear (the completeness delta stays large
    even at 64 steps), a demanding test case that needs no trained weights.
    """
    torch.manual_seed(seed)
    net = models.teacher()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
    net.classifier[1].reset_parameters()
    net.train()
    with torch.no_grad():
        net(data.to_float(data.load_synthetic("train", 64, seed=seed).images, normalized=True))
    return net.eval()


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    # channels_last, as integrated_gradients leaves it, so that Captum runs the same convolution
    # kernels. This random network is chaotic: rounding differences between the NCHW and the
    # channels_last kernels alone move its IG by ~1 % (a trained teacher's by ~1e-7 with the
    # paper's baseline, see benchmarks/ig_throughput.py). Same kernels isolate our arithmetic.
    return calibrated_teacher().to(memory_format=torch.channels_last)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative difference the issue and the benchmark report."""
    return ((a - b).abs().max() / b.abs().max()).item()


def _captum(model, images, targets, n_steps, method, baseline, dtype=torch.float32):
    x = data.to_float(images, normalized=True).to(dtype)
    base = attribution.baseline_input(x, baseline)
    return IntegratedGradients(model).attribute(
        x,
        baselines=base,
        target=targets,
        n_steps=n_steps,
        method=method,
        return_convergence_delta=True,
    )


def _assert_as_accurate_as_captum(
    model, ours, images, targets, n_steps, method, baseline, delta=None
):
    """ours (and its completeness delta) within rounding of Captum, judged against float64 Captum.

    Two fp32 evaluations of the same IG differ by kernel choice alone (batch size, thread count and
    memory format change oneDNN's summation order), and this random, chaotic teacher amplifies that
    to 1e-4..1e-2 (its fp32 and fp64 forward passes differ by as much). So "matches Captum" means:
    no further from the float64 result than Captum's own fp32 result is (floor 1e-4).
    """
    ref32, delta32 = _captum(model, images, targets, n_steps, method, baseline)
    model64 = copy.deepcopy(model).double()
    ref64, delta64 = _captum(model64, images, targets, n_steps, method, baseline, torch.float64)
    assert _relative(ours.double(), ref64) <= max(1e-4, 2 * _relative(ref32.double(), ref64))
    if delta is not None:
        captum_error = (delta32.double() - delta64).abs().max().item()
        assert (delta.double() - delta64).abs().max().item() <= max(1e-4, 2 * captum_error)


# --- integrated gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("method", attribution.RULES)
@pytest.mark.parametrize("n_steps", [2, 7, 50])
def test_quadrature_is_captums(method: str, n_steps: int) -> None:
    step_sizes, alphas = approximation_parameters(method)
    a, w = attribution.quadrature(n_steps, method)
    assert a.tolist() == alphas(n_steps) and w.tolist() == step_sizes(n_steps)


@pytest.mark.parametrize("baseline", attribution.BASELINES)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_matches_captum_on_real_images(teacher, cifar10_test, baseline: str, method: str) -> None:
    images, labels = cifar10_test.images[:4], cifar10_test.labels[:4]
    ours, delta = integrated_gradients(
        teacher, images, labels, n_steps=8, method=method, baseline=baseline, chunk_size=12
    )
    assert ours.shape == (4, 3, 32, 32) and ours.dtype == torch.float32
    _assert_as_accurate_as_captum(teacher, ours, images, labels, 8, method, baseline, delta)


def test_matches_captum_at_the_papers_settings(teacher, cifar10_test) -> None:
    # n_steps 50, Gauss-Legendre, zero baseline in normalised space, true labels (paper.md §2).
    images, labels = cifar10_test.images[4:6], cifar10_test.labels[4:6]
    ours, _ = integrated_gradients(teacher, images, labels)
    _assert_as_accurate_as_captum(
        teacher, ours, images, labels, 50, "gausslegendre", "normalized-zero"
    )


def test_matches_captum_on_synthetic_images(teacher) -> None:
    # The same check without the real data, so it always runs.
    ds = data.load_synthetic("test", 3, seed=1)
    ours, _ = integrated_gradients(teacher, ds.images, ds.labels, n_steps=6, method="riemann_left")
    _assert_as_accurate_as_captum(
        teacher, ours, ds.images, ds.labels, 6, "riemann_left", "normalized-zero"
    )


def test_linear_model_is_exact() -> None:
    # For F(x) = w . x + b, IG = w * (x - x') exactly and completeness holds for any rule.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    attr, delta = integrated_gradients(net, images, 4, n_steps=3, baseline="black")
    x = data.to_float(images, normalized=True)
    expected = net[1].weight[4].view(3, 8, 8) * (x - attribution.baseline_input(x, "black"))
    torch.testing.assert_close(attr, expected.expand_as(attr).detach(), atol=1e-6, rtol=1e-5)
    assert delta.abs().max() < 1e-5


def test_chunking_and_input_types_do_not_change_the_result(teacher) -> None:
    ds = data.load_synthetic("test", 3, seed=2)
    a, da = integrated_gradients(teacher, ds.images, ds.labels, n_steps=5, chunk_size=4)
    b, db = integrated_gradients(
        teacher, ds.images.float() / 255, ds.labels.tolist(), n_steps=5, chunk_size=15
    )
    assert _relative(a, b) <= 1e-5
    torch.testing.assert_close(da, db, atol=1e-5, rtol=1e-4)


def test_black_baseline_gives_black_pixels_no_attribution(teacher) -> None:
    images = data.load_synthetic("test", 2, seed=3).images.clone()
    images[:, :, :10] = 0  # the top 10 rows black in every channel
    attr, _ = integrated_gradients(teacher, images, 0, n_steps=3, baseline="black")
    assert torch.equal(attr[:, :, :10], torch.zeros_like(attr[:, :, :10]))
    assert attr[:, :, 10:].abs().sum() > 0
    # The paper's baseline is the mean colour, so black pixels do get attribution there.
    attr, _ = integrated_gradients(teacher, images, 0, n_steps=3)
    assert attr[:, :, :10].abs().sum() > 0


def test_model_flags_are_restored_and_no_weight_gradients_accumulate() -> None:
    net = calibrated_teacher()
    net.train()
    params = list(net.parameters())
    params[0].requires_grad_(False)  # a caller's own freezing must survive too
    images = data.load_synthetic("test", 2).images
    integrated_gradients(net, images, 1, n_steps=2)
    assert net.training
    assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
    assert all(p.grad is None for p in params)


def test_bf16_is_close_to_fp32() -> None:
    # On a smooth (linear) model bf16 costs only its rounding: 8 mantissa bits, ~4e-3.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    fp32, _ = integrated_gradients(net, images, 1, n_steps=4)
    bf16, _ = integrated_gradients(net, images, 1, n_steps=4, precision="bf16")
    assert bf16.dtype == torch.float32 and 0 < _relative(bf16, fp32) < 1e-2


def test_folding_batchnorm_keeps_the_function_and_the_callers_model() -> None:
    net = calibrated_teacher()
    net.train()
    folded = attribution.fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert net.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    ds = data.load_synthetic("test", 3, seed=5)
    x = data.to_float(ds.images, normalized=True)
    net.eval()
    assert _relative(folded(x), net(x)) < 1e-4
    # fold_bn=True is IG of the folded copy (which on this chaotic network differs by ~1e-2).
    a, _ = integrated_gradients(net, ds.images, ds.labels, n_steps=3, fold_bn=True)
    b, _ = integrated_gradients(folded, ds.images, ds.labels, n_steps=3)
    assert _relative(a, b) < 1e-6


def test_ig_map_is_the_sum_of_absolute_values_over_rgb() -> None:
    attr = torch.randn(2, 3, 4, 5)
    m = ig_map(attr)
    assert m.shape == (2, 4, 5) and (m >= 0).all()
    torch.testing.assert_close(m, attr[:, 0].abs() + attr[:, 1].abs() + attr[:, 2].abs())


def test_bad_arguments_name_the_value(teacher) -> None:
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="method='simpson'"):
        integrated_gradients(teacher, images, 0, method="simpson")
    with pytest.raises(ConfigError, match="baseline='white'"):
        integrated_gradients(teacher, images, 0, baseline="white")
    with pytest.raises(ConfigError, match="n_steps=1; riemann_trapezoid needs"):
        integrated_gradients(teacher, images, 0, n_steps=1, method="riemann_trapezoid")
    with pytest.raises(ConfigError, match=r"targets have shape \(3,\)"):
        integrated_gradients(teacher, images, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="precision='fp8'"):
        integrated_gradients(teacher, images, 0, precision="fp8")
    with pytest.raises(ConfigError, match="range over"):
        integrated_gradients(teacher, images.float() + 2, 0)
    with pytest.raises(ConfigError, match="chunk_size=0"):
        integrated_gradients(teacher, images, 0, chunk_size=0)


# --- the store -------------------------------------------------------------------------------------


def _teacher_run() -> runs.Run:
    """A finished stand-in teacher run holding `calibrated_teacher()` (no training needed)."""

    def save(run: runs.Run) -> dict:
        run.save_torch("model.pt", calibrated_teacher().state_dict())
        return {"final_test_accuracy": None}

    return runs.get_or_run("teacher", {"test": "calibrated", "seed": 0}, save)


def _squares(n: int) -> data.Dataset:
    """Black images, each with one grey 4x4 square at a position that encodes its index."""
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    for i in range(n):
        r, c = 4 * (i // 7), 4 * (i % 7)
        images[i, :, r : r + 4, c : c + 4] = 200
    labels = torch.arange(n) % 10
    return data.Dataset(
        images, labels, data.CIFAR10_CLASSES, "squares", data.fingerprint(images, labels), "train"
    )


def test_store_is_aligned_cached_and_read_only(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    teacher_run, ds = _teacher_run(), _squares(20)
    # With the black baseline, IG is exactly zero on black pixels: all of map i's mass must sit on
    # image i's own square, which a shuffled or shifted store would miss.
    store = precompute_ig(
        teacher_run, ds, n_steps=2, baseline="black", batch_size=6, progress=False
    )
    maps = load_ig_maps(store, ds, teacher_run)
    assert isinstance(maps, np.memmap) and maps.dtype == np.float16 and maps.shape == (20, 32, 32)
    assert not maps.flags.writeable
    inside = ds.images[:, 0].numpy() > 0
    assert (maps[~inside] == 0).all()
    assert all(maps[i][inside[i]].sum() > 0 for i in range(20))
    # ... and equals the attribution computed directly for that image, to float16 precision.
    attr, _ = integrated_gradients(
        calibrated_teacher(), ds.images[[13]], ds.labels[[13]], 2, baseline="black"
    )
    np.testing.assert_allclose(maps[13], ig_map(attr)[0].numpy(), rtol=2e-3, atol=1e-6)
    m = store.metrics
    assert (m["teacher_run"], m["train_data"], m["n_steps"]) == (
        teacher_run.path.name,
        ds.fingerprint,
        2,
    )
    assert m["baseline"] == "black" and m["method"] == "gausslegendre" and "igkd_version" in m
    completeness = np.load(store.path / "completeness.npy")
    assert completeness.shape == (20, 2) and np.isfinite(completeness).all()
    assert not list(store.path.glob("*.partial.npy"))

    def boom(*args, **kwargs):
        raise AssertionError("the cached store was recomputed")

    monkeypatch.setattr(ig_store, "integrated_gradients", boom)
    again = precompute_ig(teacher_run, ds, n_steps=2, baseline="black", batch_size=6)
    assert again.path == store.path


def test_mismatched_or_unfinished_store_is_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    teacher_run, ds = _teacher_run(), _squares(8)
    store = precompute_ig(teacher_run, ds, n_steps=1, batch_size=8, progress=False)
    assert load_ig_maps(store.path / "maps.npy", ds, teacher_run.path.name).shape == (8, 32, 32)
    with pytest.raises(CheckpointError, match=f"not on {ds.subset([0, 1]).fingerprint!r}"):
        load_ig_maps(store, ds.subset([0, 1]), teacher_run)
    with pytest.raises(CheckpointError, match="from teacher run .* not 'other-teacher'"):
        load_ig_maps(store, ds, "other-teacher")
    (store.path / "DONE").unlink()
    with pytest.raises(CheckpointError, match="not a finished IG-map store"):
        load_ig_maps(store, ds, teacher_run)
    folded = precompute_ig(teacher_run, ds, n_steps=1, batch_size=8, fold_bn=True, progress=False)
    assert folded.path != store.path and folded.metrics["fold_bn"] is True


# One thread: small chunks on an oversubscribed CPU (another torch job on the same cores) slow
# down by orders of magnitude while threads wait for each other; one thread keeps the test steady.
KILL_SCRIPT = """
import hashlib, json, torch
torch.set_num_threads(1)
from igkd import data
from igkd.ig_store import precompute_ig
from test_attribution import _teacher_run
ds = data.load_synthetic("train", 96)
store = precompute_ig(_teacher_run(), ds, n_steps=4, batch_size=6, progress=False)
digest = {f: hashlib.sha256((store.path / f).read_bytes()).hexdigest()
          for f in ("maps.npy", "completeness.npy")}
print(json.dumps({"digest": digest, **store.metrics}))
"""


def test_killed_precompute_resumes_to_the_same_maps(tmp_path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "IGKD_RUNS": str(tmp_path / "ref"),
    }
    cmd = [sys.executable, "-c", KILL_SCRIPT]
    ref = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr
    expected = json.loads(ref.stdout)

    env["IGKD_RUNS"] = str(tmp_path / "killed")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
    deadline = time.time() + 240
    while not list((tmp_path / "killed").glob("ig_maps/*/checkpoint.pt")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = (tmp_path / "killed" / "ig_maps").iterdir()
    assert not (run_dir / "DONE").exists() and not (run_dir / "maps.npy").exists()
    assert (run_dir / "maps.partial.npy").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["digest"] == expected["digest"]  # byte for byte
    assert 0 < got["resumed_from"] < 96  # finished chunks were kept, not recomputed
    attempts = runs.Run("ig_maps", {}, run_dir).read_json("metadata.json")["attempts"]
    assert len(attempts) == 2
