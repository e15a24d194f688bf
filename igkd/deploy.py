"""The deployment table of chapter 08: each model as PyTorch fp32, ONNX fp32 and ONNX int8, with
size, accuracy and latency; and which trained student the chapter deploys.

The pieces are `igkd.latency` (timing) and `igkd.onnx_export` (export, quantisation, ONNX Runtime).
"""

import contextlib
import io
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from igkd import checkpoints, data, models, train
from igkd.errors import CheckpointError, ConfigError
from igkd.latency import _threads, latency
from igkd.onnx_export import (
    export_onnx,
    onnx_latency,
    onnx_predict,
    onnx_session,
    quantize_int8,
)

FORMATS = ("PyTorch fp32", "ONNX fp32", "ONNX int8")


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
                path = checkpoints.published_path(prefer_method, download_ok=False)
                return checkpoints.load_student(path), f"published {prefer_method} checkpoint"
            except CheckpointError:
                pass
        run = pipeline.student_run(
            row.label, "student", profile=prof.name, data_root=data_root, progress=progress
        )
        return checkpoints.load_model(run), f"run {run.path.name} (student, {prof.name})"
    found = [
        (run, metrics)
        for run, metrics in pipeline.finished_students(prof.name)
        if run.config["layers_removed"] == row.layers_removed
    ]
    if found:
        # find_runs lists oldest first: a stable sort leaves the newest of equals last
        run, metrics = sorted(found, key=lambda f: _rank(*f, prefer_method, prof.name))[-1]
        return checkpoints.load_model(
            run
        ), f"run {run.path.name} ({metrics.get('method')}, {prof.name})"
    if row.label != "4.1":
        raise CheckpointError(
            f"no finished {row.label}x student run of profile {prof.name}; train one with "
            "notebook 03 (the published checkpoints are 4.1x only)"
        )
    return checkpoints.load_published(prefer_method), f"published {prefer_method} checkpoint"
