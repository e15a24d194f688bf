"""CPU latency of PyTorch models: warm medians with torch.utils.benchmark, a cold first call, and
forward FLOPs (torch.utils.flop_counter); the table of chapter 08's latency section.

Latencies are measured with `torch.utils.benchmark` (PyTorch and ONNX Runtime alike, see
`igkd.onnx_export.onnx_latency`): warm-up, then repeated timed blocks; median and interquartile
range in milliseconds per call (one batch). Every model is timed behind the same input, float32
(N, 3, 32, 32) RGB pixels in [0, 1] (`Deployable` folds a model's own normalisation in).
"""

import copy
import logging
import time
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from igkd import data, models
from igkd.errors import ConfigError


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
