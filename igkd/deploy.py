"""Deployment: CPU latency, ONNX export, int8 static quantisation and ONNX Runtime inference.

Every exported model takes the same input, whatever space its PyTorch version was trained in:
float32 (N, 3, 32, 32) RGB pixels in [0, 1] (uint8 / 255). For the teacher, which expects
CIFAR-normalised inputs, the normalisation is folded into the graph; the ONNX file's metadata
(`igkd.*` properties) says so. The output is (N, 10) logits in CIFAR-10 class order.

Latencies are measured with `torch.utils.benchmark` (PyTorch and ONNX Runtime alike): warm-up,
then repeated timed blocks; median and interquartile range in milliseconds per call (one batch).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import igkd
from igkd import data, models, paths, train
from igkd.errors import CheckpointError, ConfigError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INPUT_SPACE = "float32 (N, 3, 32, 32) RGB in [0, 1] (uint8 pixels / 255)"
FORMATS = ("PyTorch fp32", "ONNX fp32", "ONNX int8")


def _timer_module():
    # torch.utils.benchmark imports cpp_extension, which logs a "No CUDA runtime" warning with a
    # timestamp on CPU machines that have /usr/local/cuda: noise in notebook outputs, so mute it.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    return benchmark


def _threads(threads: int | None) -> int:
    if threads is None:
        return torch.get_num_threads()
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r}; use a positive integer or None (torch's setting)")
    return threads


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; use a positive integer")


def _example_batch(batch_size: int, images: torch.Tensor | None = None) -> torch.Tensor:
    """Float [0, 1] (B, 3, 32, 32): real images when given (repeated to fill B), else random."""
    if images is None:
        return torch.rand(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reps = -(-batch_size // len(images))
    return data.to_float(images[:batch_size].repeat(reps, 1, 1, 1)[:batch_size])


def _summary(m, backend: str, batch_size: int, threads: int) -> dict:
    """The fields of one latency measurement (torch.utils.benchmark Measurement -> dict)."""
    median_ms = m.median * 1e3
    return {
        "backend": backend,
        "batch_size": batch_size,
        "threads": threads,
        "median_ms": median_ms,
        "iqr_ms": m.iqr * 1e3,
        "mean_ms": m.mean * 1e3,
        "per_image_ms": median_ms / batch_size,
        "images_per_s": 1e3 * batch_size / median_ms,
        "measurements": len(m.times),  # timed blocks; each averages `calls_per_block` calls
        "calls_per_block": m.number_per_run,
    }


class Deployable(nn.Module):
    """`model` behind a [0, 1]-pixel input: applies the CIFAR-10 normalisation first when the
    model expects normalised inputs, so exported graphs all take the same input space."""

    def __init__(self, model: nn.Module, normalized: bool) -> None:
        super().__init__()
        self.model = model
        self.normalized = normalized
        self.register_buffer("mean", torch.tensor(data.CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data.CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std if self.normalized else x)


def _normalized(model: nn.Module, normalized: bool | None) -> bool:
    return models.input_space(model) if normalized is None else bool(normalized)


# --- latency -----------------------------------------------------------------------------------


def latency(
    model: nn.Module,
    batch_size: int,
    *,
    threads: int | None = None,
    min_run_time: float = 1.0,
    warmup: int = 3,
    channels_last: bool = True,
    images: torch.Tensor | None = None,
) -> dict:
    """CPU latency of one fp32 forward pass of a (batch_size, 3, 32, 32) batch, in ms.

    `torch.utils.benchmark.Timer.blocked_autorange` under `torch.inference_mode`, with `threads`
    intra-op threads (None: torch's current setting), after `warmup` untimed calls (the timer's
    block-size search adds more). Inputs are `images` (uint8, repeated to fill the batch) or
    random pixels; the model runs in eval mode, channels_last by default (as `train.predict`).
    Returns backend, batch_size, threads, median_ms, iqr_ms, mean_ms, per_image_ms, images_per_s,
    measurements and calls_per_block.
    """
    _check_batch(batch_size)
    threads = _threads(threads)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).float().eval().to("cpu", memory_format=fmt)
    x = _example_batch(batch_size, images).contiguous(memory_format=fmt)
    benchmark = _timer_module()
    timer = benchmark.Timer(
        stmt="with torch.inference_mode(): model(x)",
        globals={"model": model, "x": x, "torch": torch},
        num_threads=threads,
    )
    with benchmark.utils.common.set_torch_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            model(x)
    return _summary(
        timer.blocked_autorange(min_run_time=min_run_time), "PyTorch", batch_size, threads
    )


def cold_forward_ms(model: nn.Module, *, threads: int | None = None, seed: int = 0) -> float:
    """The paper's timing protocol (paper.md 7.6): one forward of a random 1x3x32x32 tensor, timed
    with `time.perf_counter`, no warm-up, on a fresh copy of the model (NCHW, autograd on), in ms.

    A single cold call: it includes one-off costs (allocations, kernel selection) and varies from
    run to run; it is shown only to put the paper's 140 ms -> 13 ms beside a comparable figure.
    """
    threads = _threads(threads)
    model = copy.deepcopy(model).float().eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    benchmark = _timer_module()
    with benchmark.utils.common.set_torch_threads(threads):
        start = time.perf_counter()
        model(x)
        return (time.perf_counter() - start) * 1e3


def forward_flops(model: nn.Module) -> int:
    """Floating-point operations of one forward pass of one 3x32x32 image (a multiply-add counts
    2), from `torch.utils.flop_counter` (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).float().eval().cpu()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def latency_table(
    models_: Mapping[str, nn.Module],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    min_run_time: float = 1.0,
    reference: str | None = None,
    cold: bool = True,
    images: torch.Tensor | None = None,
    warmup: int = 3,
) -> pd.DataFrame:
    """PyTorch fp32 latency of each model: median and IQR (ms) per batch size, one row per model.

    With `cold`, first the paper's protocol (`cold_forward_ms`) for every model, in order, before
    any warm measurement. With `reference` (a key of `models_`), speed-ups over that model (ratio
    of medians) per batch size, and the ratio of FLOPs, the speed-up the arithmetic alone predicts.
    Columns: parameters, MFLOPs (per image), [cold forward (ms)], b{B} median (ms), b{B} IQR (ms),
    threads, [b{B} speed-up, FLOP ratio].
    """
    threads = _threads(threads)
    if reference is not None and reference not in models_:
        raise ConfigError(f"reference={reference!r} is not one of the models {list(models_)}")
    rows = {
        name: {"parameters": models.count_parameters(m), "MFLOPs": forward_flops(m) / 1e6}
        for name, m in models_.items()
    }
    if cold:
        for name, m in models_.items():
            rows[name]["cold forward (ms)"] = cold_forward_ms(m, threads=threads)
    for name, m in models_.items():
        for b in batch_sizes:
            lat = latency(
                m, b, threads=threads, min_run_time=min_run_time, images=images, warmup=warmup
            )
            rows[name][f"b{b} median (ms)"] = lat["median_ms"]
            rows[name][f"b{b} IQR (ms)"] = lat["iqr_ms"]
        rows[name]["threads"] = threads
    table = pd.DataFrame.from_dict(rows, orient="index")
    if reference is not None:
        for b in batch_sizes:
            col = f"b{b} median (ms)"
            table[f"b{b} speed-up"] = table.loc[reference, col] / table[col]
        table["FLOP ratio"] = table.loc[reference, "MFLOPs"] / table["MFLOPs"]
    return table


# --- ONNX export ---------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    normalized: bool | None = None,
    description: str = "",
) -> Path:
    """Export `model` to an ONNX file at `path` with the dynamo exporter (`torch.onnx.export`).

    `normalized`: whether `model` expects CIFAR-normalised inputs (None: `model.normalized_inputs`);
    if so the normalisation is folded into the graph. The file's input `images` is always
    float32 (N, 3, 32, 32) in [0, 1] with a dynamic batch axis N; the output `logits` is (N, 10).
    BatchNorm is folded into the convolutions by the exporter's optimiser. The input space,
    classes, igkd version and `description` are stored as `igkd.*` metadata properties.
    """
    import onnx

    path = Path(path).expanduser()
    normalized = _normalized(model, normalized)
    wrapped = Deployable(copy.deepcopy(model).float().eval().cpu(), normalized).eval()
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 1.
    example = (torch.rand(2, 3, 32, 32),)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # exporter progress lines
        program = torch.onnx.export(
            wrapped,
            example,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    proto.doc_string = f"igkd {type(model).__name__}: {description}".strip(": ")
    meta = {
        "igkd.version": igkd.__version__,
        "igkd.model": type(model).__name__,
        "igkd.description": description,
        "igkd.input": INPUT_SPACE,
        "igkd.normalization_folded": json.dumps(normalized),
        "igkd.normalization": json.dumps({"mean": data.CIFAR10_MEAN, "std": data.CIFAR10_STD}),
        "igkd.output": "float32 (N, 10) logits",
        "igkd.classes": json.dumps(list(data.CIFAR10_CLASSES)),
        "igkd.precision": "fp32",
    }
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    paths.atomic_write_bytes(path, proto.SerializeToString())
    return path


def max_logit_difference(
    model: nn.Module, path: str | Path, *, n: int = 16, normalized: bool | None = None
) -> float:
    """Max |logit difference| between `model` and its exported file on `n` random images."""
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    net = Deployable(copy.deepcopy(model).float().eval().cpu(), _normalized(model, normalized))
    with torch.inference_mode():
        ref = net(x)
    sess = onnx_session(path)
    got = torch.from_numpy(sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    return (got - ref).abs().max().item()


def metadata(path: str | Path) -> dict[str, str]:
    """The `igkd.*` (and other) metadata properties of an ONNX file."""
    import onnx

    model = onnx.load(str(_existing(path)), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no ONNX file at {path}")
    return path


# --- int8 static quantisation ---------------------------------------------------------------------


def _calibration_reader(images: torch.Tensor, batch_size: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Batches of real images in the exported input space (float32 [0, 1])."""

        def __init__(self) -> None:
            self._starts = iter(range(0, len(images), batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            return {INPUT_NAME: data.to_float(images[start : start + batch_size]).numpy()}

    return Reader()


def quantize_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration_images: torch.Tensor,
    *,
    batch_size: int = 32,
    method: str = "minmax",
) -> Path:
    """Static int8 quantisation of an exported fp32 ONNX file with ONNX Runtime.

    QDQ format, per-channel int8 weights (symmetric), uint8 activations whose ranges are
    calibrated (`method`: "minmax", "entropy" or "percentile") on `calibration_images`: uint8
    (N, 3, 32, 32) real training images, fed in [0, 1] in batches of `batch_size`. The model is
    first pre-processed (shape inference and graph optimisation) as ONNX Runtime recommends.
    The metadata of the fp32 file is kept, with the quantisation settings added.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ConfigError(f"calibration method={method!r}; use one of {', '.join(methods)}")
    if (
        not isinstance(calibration_images, torch.Tensor)
        or calibration_images.dtype != torch.uint8
        or calibration_images.ndim != 4
        or len(calibration_images) == 0
    ):
        raise ConfigError(
            "calibration_images must be a non-empty uint8 tensor (N, 3, 32, 32) of training images"
        )
    fp32_path, int8_path = _existing(fp32_path), Path(int8_path).expanduser()
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=int8_path.parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(out),
            _calibration_reader(calibration_images, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
        )
        model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(metadata(fp32_path))
    props["igkd.precision"] = "int8"
    props["igkd.quantization"] = json.dumps(
        {
            "format": "QDQ",
            "weights": "int8, per channel, symmetric",
            "activations": "uint8, per tensor",
            "calibration": method,
            "calibration_images": len(calibration_images),
        }
    )
    onnx.helper.set_model_props(model, props)
    paths.atomic_write_bytes(int8_path, model.SerializeToString())
    return int8_path


# --- ONNX Runtime -----------------------------------------------------------------------------------


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU InferenceSession with `threads` intra-op threads (None: torch's
    setting), one inter-op thread and all graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(_existing(path)), opts, providers=["CPUExecutionProvider"])


def onnx_predict(
    path_or_session,
    images: torch.Tensor,
    *,
    batch_size: int = 500,
    threads: int | None = None,
) -> torch.Tensor:
    """Logits (N, 10) float32 of an exported model for uint8 images (N, 3, 32, 32).

    The images are fed as [0, 1] pixels, the input space of every file `export_onnx` writes.
    """
    sess = path_or_session
    if isinstance(path_or_session, (str, Path)):
        sess = onnx_session(path_or_session, threads)
    out = [
        torch.from_numpy(
            sess.run(
                [OUTPUT_NAME], {INPUT_NAME: data.to_float(images[s : s + batch_size]).numpy()}
            )[0]
        )
        for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, 10)


def onnx_latency(
    path: str | Path,
    batch_size: int,
    threads: int | None = None,
    *,
    min_run_time: float = 1.0,
    warmup: int = 3,
    images: torch.Tensor | None = None,
) -> dict:
    """Latency of one ONNX Runtime run of a (batch_size, 3, 32, 32) batch, in ms.

    Same timer and fields as `latency`; the session has `threads` intra-op threads.
    """
    _check_batch(batch_size)
    threads = _threads(threads)
    sess = onnx_session(path, threads)
    feed = {INPUT_NAME: _example_batch(batch_size, images).numpy()}
    for _ in range(warmup):
        sess.run([OUTPUT_NAME], feed)
    timer = _timer_module().Timer(
        stmt="sess.run(outputs, feed)",
        globals={"sess": sess, "outputs": [OUTPUT_NAME], "feed": feed},
        num_threads=1,  # torch's own threads; ORT's are the session's
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return _summary(m, "ONNX Runtime", batch_size, threads)


# --- loading what to export ---------------------------------------------------------------------


# --- the deployment table ------------------------------------------------------------------------


def state_dict_mb(model: nn.Module) -> float:
    """Size of `torch.save(model.state_dict())` in MiB (the paper's "MB")."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 2**20


def _files(
    name: str, model: nn.Module, out_dir: Path, calibration_images: torch.Tensor | None, int8: bool
) -> dict[str, Path]:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    files = {"ONNX fp32": export_onnx(model, out_dir / f"{stem}.onnx", description=name)}
    if int8:
        if calibration_images is None:
            raise ConfigError("ONNX int8 needs calibration_images (uint8 training images)")
        files["ONNX int8"] = quantize_int8(
            files["ONNX fp32"], out_dir / f"{stem}.int8.onnx", calibration_images
        )
    return files


@contextlib.contextmanager
def _directory(out_dir: str | Path | None) -> Iterator[Path]:
    if out_dir is not None:
        path = Path(out_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="igkd-onnx-") as tmp:
        yield Path(tmp)


def deployment_table(
    models_: Mapping[str, nn.Module],
    test_ds: data.Dataset,
    *,
    calibration_images: torch.Tensor | None = None,
    formats: Sequence[str] = FORMATS,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    min_run_time: float = 1.0,
    warmup: int = 3,
    out_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Accuracy, agreement, latency and file size per model and format.

    `models_` maps a name to a model (teacher or student; its `normalized_inputs` picks the input
    space). Formats: "PyTorch fp32", "ONNX fp32", "ONNX int8" (calibrated on
    `calibration_images`, uint8 training images). Files go to `out_dir` (None: a temporary
    directory). One row per (model, format): test accuracy (%), its change from PyTorch fp32 (pp),
    top-1 agreement with PyTorch fp32 (%), max |logit difference|, latency median and IQR (ms) per
    batch size, file size (MiB) and threads.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats {unknown}; use some of {', '.join(FORMATS)}")
    threads = _threads(threads)
    timing = {
        "min_run_time": min_run_time,
        "warmup": warmup,
        "images": test_ds.images[: max(batch_sizes)],
    }
    rows = []
    with _directory(out_dir) as directory:
        for name, model in models_.items():
            reference = train.predict(model, test_ds.images, device="cpu")
            files = {}
            if any(f.startswith("ONNX") for f in formats):
                files = _files(name, model, directory, calibration_images, "ONNX int8" in formats)
            for fmt in formats:
                if fmt == "PyTorch fp32":
                    logits, size = reference, state_dict_mb(model)
                else:
                    sess = onnx_session(files[fmt], threads)
                    logits, size = (
                        onnx_predict(sess, test_ds.images),
                        files[fmt].stat().st_size / 2**20,
                    )
                row = {
                    "model": name,
                    "format": fmt,
                    "accuracy (%)": 100
                    * (logits.argmax(1) == test_ds.labels).double().mean().item(),
                    "agreement with PyTorch (%)": 100
                    * (logits.argmax(1) == reference.argmax(1)).double().mean().item(),
                    "max |logit diff|": (logits - reference).abs().max().item(),
                }
                for b in batch_sizes:
                    if fmt == "PyTorch fp32":
                        lat = latency(model, b, threads=threads, **timing)
                    else:
                        lat = onnx_latency(files[fmt], b, threads, **timing)
                    row[f"b{b} median (ms)"] = lat["median_ms"]
                    row[f"b{b} IQR (ms)"] = lat["iqr_ms"]
                row["file (MiB)"] = size
                row["threads"] = threads
                rows.append(row)
    table = pd.DataFrame(rows)
    fp32 = table[table["format"] == "PyTorch fp32"].set_index("model")["accuracy (%)"]
    if len(fp32):
        table.insert(3, "Δ accuracy (pp)", table["accuracy (%)"] - table["model"].map(fp32))
    return table.set_index(["model", "format"])


# --- what the deployment notebook compares -------------------------------------------------------


def _rank(run, metrics: dict, prefer_method: str, profile: str) -> tuple[bool, int]:
    """How well a run suits deployment: the preferred method first, then by what it was made for:
    a single run (notebook 03's, trained for use) over an ablation run over the rest."""
    made_for = {p.get("experiment") for p in run.purposes if p.get("profile") == profile}
    order = 2 if "single" in made_for else 1 if "ablation" in made_for else 0
    return metrics["method"] == prefer_method, order


def student_for_deployment(
    profile: str | None = None,
    compression: str = "4.1",
    *,
    prefer_method: str = "KD_IG",
    data_root: str | Path | None = None,
    progress: bool = False,
) -> tuple[nn.Module, str]:
    """A trained student at `compression` and where it came from, for deployment comparisons.

    quick / paper: a finished student run of the profile from the run cache (`prefer_method`
    first, then by purpose: notebook 03's single run, trained for use, over the experiments'
    shorter ablation runs over the rest; then the newest), else the published `prefer_method` checkpoint (4.1x
    only; downloaded if missing). A profile with `deploy_published_first` (ci): the published
    checkpoint if it is on disk (a ci run trains too briefly to tell fp32 from int8 predictions
    apart), else its run of method `student` (trained now if missing). Returns (model in eval
    mode, description).
    """
    from igkd import experiments, pipeline, profiles

    prof = profiles.get(profile)
    row = models.compression_row(compression)
    if experiments.setting("deploy_published_first", prof.name, None, False):
        if row.label == "4.1":
            try:
                path = models.published_path(prefer_method, download_ok=False)
                return models.load_student(path), f"published {prefer_method} checkpoint"
            except CheckpointError:
                pass
        run = pipeline.student_run(
            row.label, "student", profile=prof.name, data_root=data_root, progress=progress
        )
        return models.load_model(run), f"run {run.path.name} (student, {prof.name})"
    found = [
        (run, metrics)
        for run, metrics in pipeline.finished_students(prof.name)
        if run.config["layers_removed"] == row.layers_removed
    ]
    if found:
        # find_runs lists oldest first: a stable sort leaves the newest of equals last
        run, metrics = sorted(found, key=lambda f: _rank(*f, prefer_method, prof.name))[-1]
        return models.load_model(run), f"run {run.path.name} ({metrics.get('method')}, {prof.name})"
    if row.label != "4.1":
        raise CheckpointError(
            f"no finished {row.label}x student run of profile {prof.name}; train one with "
            "notebook 03 (the published checkpoints are 4.1x only)"
        )
    return models.load_published(prefer_method), f"published {prefer_method} checkpoint"
