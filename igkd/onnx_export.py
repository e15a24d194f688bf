"""ONNX export, int8 static quantisation and ONNX Runtime inference.

Every exported model takes the same input, whatever space its PyTorch version was trained in:
float32 (N, 3, 32, 32) RGB pixels in [0, 1] (uint8 / 255). For the teacher, which expects
CIFAR-normalised inputs, the normalisation is folded into the graph; the ONNX file's metadata
(`igkd.*` properties) says so. The output is (N, 10) logits in CIFAR-10 class order.
"""

import contextlib
import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import igkd
from igkd import data, paths
from igkd.errors import CheckpointError, ConfigError
from igkd.latency import (
    Deployable,
    _check_batch,
    _example_batch,
    _normalized,
    _summary,
    _threads,
    _timer_module,
)

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
INPUT_SPACE = "float32 (N, 3, 32, 32) RGB in [0, 1] (uint8 pixels / 255)"


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
