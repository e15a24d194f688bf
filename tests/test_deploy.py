"""ONNX export parity, int8 quantisation, latency fields and `igkd export` (ci-sized)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from torch import nn

from igkd import cli, data, deploy, latency, models, onnx_export, runs, train
from igkd.config import purpose
from igkd.errors import CheckpointError, ConfigError


@pytest.fixture(autouse=True)
def own_run_cache(tmp_path, monkeypatch):
    """Fake runs made here stay out of the session's run cache, which the notebooks nbval runs read
    (a fake student run without a method broke notebook 07 in CI)."""
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path / "runs"))


def nontrivial(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine terms and a wide classifier, so that the logits
    vary from image to image and a parity check cannot pass on near-constant outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def synthetic():
    return data.load_synthetic("train", 600), data.load_synthetic("test", 200)


@pytest.fixture(scope="module")
def trained_student(synthetic):
    """A 140x student trained for two epochs on the easy synthetic data (~98 % test accuracy)."""
    train_ds, _ = synthetic
    torch.manual_seed(0)
    model = models.student(140)
    recipe = train.Recipe(epochs=2, batch_size=32, lr=3e-3, augment=False, precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a loaded 2-core machine are many times slower
    try:
        train.fit(model, train_ds, recipe, progress=False)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def student_files(trained_student, synthetic, tmp_path_factory):
    train_ds, _ = synthetic
    out = tmp_path_factory.mktemp("onnx")
    fp32 = onnx_export.export_onnx(trained_student, out / "s.onnx", description="test student")
    int8 = onnx_export.quantize_int8(fp32, out / "s.int8.onnx", train_ds.images[:128])
    return fp32, int8


@pytest.mark.parametrize(
    "make", [models.teacher, lambda: models.student(4.1)], ids=["teacher", "student-4.1"]
)
def test_onnx_fp32_logits_match_pytorch(make, tmp_path):
    torch.manual_seed(0)
    model = nontrivial(make())
    path = onnx_export.export_onnx(model, tmp_path / "m.onnx")
    images = data.load_synthetic("test", 7).images  # a batch size the export never saw
    with torch.inference_mode():
        x = data.to_float(images, normalized=model.normalized_inputs)
        expected = model(x)
    got = onnx_export.onnx_predict(path, images)
    assert expected.std() > 0.1, "the check needs logits that vary"
    assert got.shape == (7, 10)
    assert (got - expected).abs().max().item() < 1e-4
    assert onnx_export.max_logit_difference(model, path) < 1e-4
    meta = onnx_export.metadata(path)
    assert json.loads(meta["igkd.normalization_folded"]) is model.normalized_inputs
    assert "[0, 1]" in meta["igkd.input"] and json.loads(meta["igkd.classes"])[0] == "airplane"
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert shape[0].dim_param and [d.dim_value for d in shape[1:]] == [3, 32, 32]


def test_int8_model_runs_and_mostly_agrees(trained_student, student_files, synthetic):
    _, test_ds = synthetic
    fp32, int8 = student_files
    graph = onnx.load(str(int8)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    weight_scales = [
        i
        for i in graph.initializer
        if i.name.endswith("_scale") and len(i.dims) == 1 and i.dims[0] > 1
    ]
    assert weight_scales, "per-channel weight scales"
    meta = onnx_export.metadata(int8)
    assert meta["igkd.precision"] == "int8" and meta["igkd.description"] == "test student"
    assert json.loads(meta["igkd.quantization"])["calibration_images"] == 128

    reference = train.predict(trained_student, test_ds.images, device="cpu")
    logits = onnx_export.onnx_predict(int8, test_ds.images, batch_size=64)
    assert logits.shape == (len(test_ds), 10) and logits.dtype == torch.float32
    accuracy = (reference.argmax(1) == test_ds.labels).float().mean().item()
    agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    assert accuracy > 0.5, "the synthetic student should have learnt something"
    assert agreement > 0.8
    assert int8.stat().st_size < fp32.stat().st_size


def test_quantize_rejects_bad_calibration(student_files, tmp_path):
    fp32, _ = student_files
    with pytest.raises(ConfigError, match="uint8"):
        onnx_export.quantize_int8(fp32, tmp_path / "q.onnx", torch.rand(4, 3, 32, 32))
    with pytest.raises(ConfigError, match="calibration method"):
        onnx_export.quantize_int8(
            fp32, tmp_path / "q.onnx", torch.zeros(4, 3, 32, 32, dtype=torch.uint8), method="x"
        )
    with pytest.raises(CheckpointError, match="no ONNX file"):
        onnx_export.quantize_int8(
            tmp_path / "none.onnx",
            tmp_path / "q.onnx",
            torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
        )


FIELDS = {
    "backend", "batch_size", "threads", "median_ms", "iqr_ms", "mean_ms", "per_image_ms",
    "images_per_s", "measurements", "calls_per_block",
}  # fmt: skip


def test_latency_fields_are_sane(trained_student, student_files):
    torch_lat = latency.latency(trained_student, 4, threads=1, min_run_time=0.02)
    ort_lat = onnx_export.onnx_latency(student_files[0], 4, 1, min_run_time=0.02)
    for lat, backend in ((torch_lat, "PyTorch"), (ort_lat, "ONNX Runtime")):
        assert set(lat) == FIELDS and lat["backend"] == backend
        assert lat["batch_size"] == 4 and lat["threads"] == 1
        assert 0 < lat["median_ms"] < 10_000 and lat["iqr_ms"] >= 0 and lat["measurements"] >= 1
        assert lat["per_image_ms"] == pytest.approx(lat["median_ms"] / 4)
    assert 0 < latency.cold_forward_ms(trained_student, threads=1) < 10_000
    with pytest.raises(ConfigError, match="batch_size"):
        latency.latency(trained_student, 0)
    with pytest.raises(ConfigError, match="threads"):
        onnx_export.onnx_latency(student_files[0], 1, threads=0)


def test_latency_table(trained_student):
    nets = {"big": models.student(55).eval(), "small": trained_student}
    table = latency.latency_table(
        nets, batch_sizes=(1, 2), threads=1, min_run_time=0.01, reference="big", warmup=1
    )
    assert list(table.index) == ["big", "small"]
    assert table.loc["big", "b2 speed-up"] == 1 and table.loc["small", "parameters"] == 16_042
    assert table.loc["big", "FLOP ratio"] == 1 and table.loc["small", "FLOP ratio"] > 1
    assert (table[["cold forward (ms)", "b1 median (ms)", "b2 median (ms)"]] > 0).all().all()
    with pytest.raises(ConfigError, match="reference"):
        latency.latency_table(nets, reference="teacher")


def test_forward_flops_of_teacher_and_4_1x_student():
    # The students drop the cheap 4x4-resolution end of the network: 4.1x fewer parameters,
    # only 1.5x fewer FLOPs (176 vs 117 MFLOPs per image).
    teacher, student = (
        latency.forward_flops(models.teacher()),
        latency.forward_flops(models.student(4.1)),
    )
    assert 170e6 < teacher < 180e6 and 1.4 < teacher / student < 1.6


def test_deployment_table(trained_student, synthetic, tmp_path):
    train_ds, test_ds = synthetic
    table = deploy.deployment_table(
        {"s": trained_student},
        test_ds,
        calibration_images=train_ds.images[:64],
        batch_sizes=(1, 8),
        threads=1,
        min_run_time=0.02,
        out_dir=tmp_path,
    )
    assert list(table.index) == [("s", f) for f in deploy.FORMATS]
    for col in ("accuracy (%)", "Δ accuracy (pp)", "b1 median (ms)", "b8 IQR (ms)", "file (MiB)"):
        assert col in table.columns
    pt, fp32, int8 = (table.loc[("s", f)] for f in deploy.FORMATS)
    assert pt["agreement with PyTorch (%)"] == 100 and pt["Δ accuracy (pp)"] == 0
    assert fp32["agreement with PyTorch (%)"] == 100 and fp32["max |logit diff|"] < 1e-4
    assert int8["agreement with PyTorch (%)"] > 80
    assert (tmp_path / "s.onnx").is_file() and (tmp_path / "s.int8.onnx").is_file()
    with pytest.raises(ConfigError, match="formats"):
        deploy.deployment_table({"s": trained_student}, test_ds, formats=["TensorRT"])


# --- igkd export ------------------------------------------------------------------------------


def finished_run(model: nn.Module, config: dict) -> runs.Run:
    def compute(run: runs.Run) -> dict:
        run.save_torch("model.pt", model.state_dict())
        return {}

    return runs.get_or_run("student", config, compute)


def test_student_for_deployment_prefers_the_profile_s_kd_ig_run():
    def fake(
        method: str, profile: str, layers_removed: int = 5, epochs: int = 1, images: int = 800
    ) -> runs.Run:
        model = models.student(layers_removed=layers_removed)

        def compute(run: runs.Run) -> dict:
            run.save_torch("model.pt", model.state_dict())
            return {  # what student_run records, in brief
                "method": method,
                "compression": "4.1",
                "final_test_accuracy": 10.0,
                "environment": {"profile": profile},
                "epochs": epochs,
                "train_images": images,
            }

        config = {
            "model": "student",
            "layers_removed": layers_removed,
            "fake": f"{method} {profile} {epochs} {images}",
        }
        return runs.get_or_run("student", config, compute)

    fake("KD", "quick")
    wanted = fake("KD_IG", "quick", epochs=3, images=50_000)  # notebook 03's run, made for use
    wanted.add_purpose(purpose("single", "quick"))
    short = fake("KD_IG", "quick", epochs=1, images=8_000)  # newer, but an experiment's run
    short.add_purpose(purpose("ablation", "quick"))
    fake("KD_IG", "paper", epochs=100, images=50_000)
    fake("KD", "quick", epochs=100, images=50_000)  # newer and longer, but not the method
    model, source = deploy.student_for_deployment("quick")
    assert isinstance(model, models.Student) and model.layers_removed == 5
    assert source == f"run {wanted.path.name} (KD_IG, quick)"
    with pytest.raises(CheckpointError, match="no finished 140x student run"):
        deploy.student_for_deployment("quick", "140")


def test_cli_export_checkpoint_with_int8(imagefolder_cifar, tmp_path, capsys):
    root, _ = imagefolder_cifar
    ckpt = tmp_path / "tiny.pt"
    torch.save(nontrivial(models.student(1122)).state_dict(), ckpt)
    out = tmp_path / "out"
    argv = ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--int8", "--out", str(out)]
    assert cli.main([*argv, "--data", str(root), "--calibration-images", "20"]) == 0
    text = capsys.readouterr().out
    assert (out / "tiny.onnx").is_file() and (out / "tiny.int8.onnx").is_file()
    assert "calibrated on 20 training images" in text and "max |logit diff|" in text
    assert (
        json.loads(onnx_export.metadata(out / "tiny.int8.onnx")["igkd.quantization"])[
            "calibration_images"
        ]
        == 20
    )


def test_cli_export_run(tmp_path, capsys):
    model = nontrivial(models.student(1122))
    run = finished_run(model, {"model": "student", "layers_removed": 17, "test": "export"})
    assert cli.main(["export", "--run", str(run.path), "--out", str(tmp_path)]) == 0
    written = tmp_path / f"student-{run.path.name}.onnx"
    assert written.is_file() and str(written) in capsys.readouterr().out
    assert onnx_export.max_logit_difference(model, written) < 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda p: ["--run", str(p / "nothing")], "is no run directory"),
        (lambda p: ["--checkpoint", str(p / "missing.pt")], "no run directory, checkpoint file"),
        (lambda p: ["--checkpoint", str(p / "s.pt"), "--int8", "--data", str(p)], "no CIFAR-10"),
        (lambda p: ["--checkpoint", "s.pt", "--calibration-images", "0"], "calibration-images"),
    ],
    ids=["missing-run", "missing-checkpoint", "int8-without-data", "zero-calibration"],
)
def test_cli_export_errors_are_one_line(args, message, tmp_path, capsys):
    torch.save(models.student(1122).state_dict(), tmp_path / "s.pt")
    assert cli.main(["export", *args(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("igkd: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_export_unfinished_run(tmp_path, capsys):
    run = runs.Run.for_config("student", {"model": "student", "layers_removed": 17, "x": 1})
    run.path.mkdir(parents=True)
    run.write_json("config.json", {"kind": "student", "config": run.config})
    assert cli.main(["export", "--run", str(run.path), "--out", str(tmp_path)]) == 2
    assert "has not finished" in capsys.readouterr().err
