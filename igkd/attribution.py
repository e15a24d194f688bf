"""Integrated gradients of the teacher, fast and batched, and the store of IG maps.

IG (Sundararajan et al. 2017) of the teacher's raw logit F_y of the true class y, in the teacher's
CIFAR-normalised input space, from a baseline x':

    IG(x) = (x - x') * integral_0^1 dF_y(x' + a (x - x')) / dx da
          ~ (x - x') * sum_k w_k dF_y(x' + a_k (x - x')) / dx

with Captum's quadrature points a_k and weights w_k, so the attributions equal Captum's
`IntegratedGradients(model).attribute(x, target=y, baselines=x')` (the published code's call,
paper.md §2) up to float rounding. The map the paper stores is M = sum over RGB of |IG|, (32, 32).

Speed comes from what Captum does not do for this case: the parameters are frozen (no weight
gradients), interpolants are built and differentiated in chunks sized for the CPU cache or GPU
memory with one `torch.autograd.grad` per chunk, and activations are channels_last.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

import igkd
from igkd import models
from igkd.data import Dataset, normalize
from igkd.errors import CheckpointError, ConfigError
from igkd.runs import Run, get_or_run
from igkd.train import out_of_place_activations

METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
BASELINES = ("normalized-zero", "black")
PRECISIONS = ("fp32", "bf16")
STORE_KIND = "ig_maps"


# --- integrated gradients --------------------------------------------------------------------------


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights), each (n_steps,) float64: Captum's integration points in [0, 1] and weights.

    `gausslegendre`: NumPy's Legendre-Gauss nodes and weights mapped from [-1, 1] to [0, 1].
    Riemann rules: left, right, middle and trapezoid points on a uniform grid, each weight 1/n.
    Captum's `riemann_trapezoid` puts its n points at linspace(0, 1, n) (spacing 1/(n-1)) but keeps
    weights 1/n halved at both ends, so its weights sum to 1 - 1/n rather than 1; we copy that so
    the attributions equal Captum's, and the completeness delta shows the resulting bias.
    """
    if method not in METHODS:
        raise ConfigError(f"method={method!r}; use one of {METHODS}")
    minimum = 1 if method == "gausslegendre" else 2  # Captum's own limits
    if not isinstance(n_steps, int) or n_steps < minimum:
        raise ConfigError(f"n_steps={n_steps!r}; {method} needs an integer >= {minimum}")
    n = n_steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * weights
    # Captum builds the Riemann grids with torch.linspace in float32; so do we, to match it exactly.
    start, end = {
        "riemann_left": (0.0, 1 - 1 / n),
        "riemann_right": (1 / n, 1.0),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
        "riemann_trapezoid": (0.0, 1.0),
    }[method]
    alphas = np.array(torch.linspace(start, end, n).tolist())
    weights = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
    return alphas, weights


def baseline_input(x: torch.Tensor, baseline: str = "normalized-zero") -> torch.Tensor:
    """The baseline x' for normalised inputs `x` (B, 3, H, W), in the same (normalised) space.

    `normalized-zero` (the paper's): zeros after normalisation, i.e. the CIFAR-10 mean colour.
    `black`: pixel value 0 mapped through the normalisation, (0 - mean) / std per channel.
    """
    if baseline == "normalized-zero":
        return torch.zeros_like(x)
    if baseline == "black":
        return normalize(torch.zeros_like(x))
    raise ConfigError(f"baseline={baseline!r}; use one of {BASELINES}")


def default_chunk_size(device: torch.device | str) -> int:
    """Interpolants per autograd.grad call: 32 on a CPU, 512 on a GPU.

    On the 2-core reference CPU (measurements.md) chunks of 16 / 32 / 64 / 256 interpolants ran at
    212 / 262 / 140 / 48 interpolants/s: beyond 32 the activations of the teacher's expanded
    layers (32 x 32 x 144 floats per image) fall out of the cache. The GPU value is a starting point
    that keeps a teacher chunk under 1 GB of activations; tune it with `chunk_size`.
    """
    return 512 if torch.device(device).type == "cuda" else 32


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients inside; the caller's flags are restored on exit."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with each BatchNorm folded into the convolution before it.

    In eval mode BatchNorm is a per-channel affine map, so it can be merged into the preceding
    convolution's weights and bias (torch.fx's `fuse`): the same function up to float rounding,
    with one memory-bound pass less per layer in the forward and the backward. On the 2-core
    reference CPU it makes the teacher's IG 1.4-1.6x faster; the attributions move by 3-5e-4
    relative (max |a - b| / max |a|), the same as Captum's own NCHW vs channels_last gap (see
    `integrated_gradients`). The caller's model is not changed.
    """
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    try:
        return fuse(model.eval(), inplace=False)
    except Exception as e:  # symbolic tracing fails on data-dependent control flow
        raise ConfigError(
            f"cannot fold the BatchNorm layers of {type(model).__name__} ({e}); use fold_bn=False"
        ) from e
    finally:
        model.train(was_training)


def _normalized_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> float32 in the teacher's normalised space."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"images have shape {tuple(images.shape)}; expected (B, 3, H, W)")
    if images.dtype == torch.uint8:
        x = images.to(device).float().div_(255)
    elif images.is_floating_point():
        x = images.to(device, torch.float32)
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ConfigError(
                f"float images range over [{x.min().item():.4g}, {x.max().item():.4g}]; pass "
                "uint8 or [0, 1] pixels (integrated_gradients normalises them itself)"
            )
    else:
        raise ConfigError(f"images are {images.dtype}; pass uint8 or float in [0, 1]")
    return normalize(x)


def _target_logit(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """F_y(x): the model's logit of each row's target class, (B,)."""
    return model(x).gather(1, targets[:, None]).squeeze(1).float()


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor | int,
    n_steps: int = 50,
    method: str = "gausslegendre",
    baseline: str = "normalized-zero",
    chunk_size: int | None = None,
    precision: str = "fp32",
    fold_bn: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG of `model`'s logit of `targets` at `images`; returns (attributions, delta).

    `images` uint8 (B, 3, H, W) or float in [0, 1]; they are normalised with the CIFAR-10
    mean/std, and the attributions (B, 3, H, W) float32 are in that normalised space, on the
    model's device. `targets` (B,) class indices (or one int for all). `delta` (B,) is the
    completeness error sum(IG) - (F(x) - F(x')), computed with fp32 forward passes: a measure of
    the quadrature's (and bf16's) error in logit units.

    `chunk_size` interpolants (None: `default_chunk_size`) go through one forward pass and one
    `torch.autograd.grad`. The model is put in eval mode and channels_last, and its parameters
    stop requiring gradients; its flags are restored afterwards.

    `precision="bf16"` runs the interpolants under bf16 autocast. Its cost: about 2e-2 relative
    error in the attributions (max |bf16 - fp32| / max |fp32| on the trained quick teacher; bf16
    keeps 8 mantissa bits), about 2e-3 per pixel in min-max-normalised maps. It may pay on a GPU
    (untested); on the 2-core AVX512-BF16 reference CPU it was slower than fp32 (5.4 vs 7.5
    images/s at 50 steps).

    `fold_bn=True` runs a copy of the model with its BatchNorm layers folded into the
    convolutions (`fold_batchnorm`): 1.4-1.6x faster, 3-5e-4 relative difference.

    Agreement with Captum: 2e-7 relative on the trained teacher when both run the same kernels.
    The integrand has ReLU6 kinks, so an interpolant whose pre-activation lies within rounding
    of 0 or 6 can flip with the last bit: Captum on an NCHW and on a channels_last copy of the
    same teacher differ by 4e-4 (benchmarks/ig_throughput.py), and by ~1e-2 on a random network.
    """
    alphas, weights = quadrature(n_steps, method)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; use one of {PRECISIONS}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise ConfigError(
            "the model has no parameters; integrated_gradients needs a network"
        ) from None
    chunk = chunk_size if chunk_size is not None else default_chunk_size(device)
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk_size={chunk_size!r}; expected a positive integer or None")
    x = _normalized_inputs(images, device).contiguous(memory_format=torch.channels_last)
    b = len(x)
    y = torch.as_tensor(targets, dtype=torch.long, device=device)
    y = y.expand(b) if y.dim() == 0 else y
    if tuple(y.shape) != (b,):
        raise ConfigError(f"targets have shape {tuple(y.shape)}; expected ({b},) or one int")
    base = baseline_input(x, baseline)
    diff = x - base
    a = torch.tensor(alphas, dtype=torch.float32, device=device)
    w = torch.tensor(weights, dtype=torch.float32, device=device)
    total = torch.zeros_like(x)  # sum_k w_k dF/dx at the k-th interpolant, per image

    if fold_bn:
        model = fold_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with _frozen(model), out_of_place_activations(model), torch.enable_grad():
        # Rows are (image, step) pairs, image-major: row r is image r // n_steps at step
        # r % n_steps. Chunks run across image boundaries so every chunk is full.
        for r0 in range(0, b * n_steps, chunk):
            r = torch.arange(r0, min(r0 + chunk, b * n_steps), device=device)
            img, step = r // n_steps, r % n_steps
            # Not addcmul: its fused multiply-add rounds differently from Captum's
            # baseline + alpha * (x - baseline), and an interpolant on a ReLU6 kink can turn
            # that last-bit difference into a visible one (see the docstring).
            xs = base[img] + a[step].view(-1, 1, 1, 1) * diff[img]
            xs = xs.contiguous(memory_format=torch.channels_last).requires_grad_(True)
            with autocast:
                out = _target_logit(model, xs, y[img])
            # Rows do not interact in eval mode, so the gradient of the sum is each row's own.
            (grad,) = torch.autograd.grad(out.sum(), xs)
            total.index_add_(0, img, grad.float() * w[step].view(-1, 1, 1, 1))
        attributions = (total * diff).contiguous()
        with torch.no_grad():
            # F(x) in chunks like the interpolants (a whole batch at once falls out of the
            # cache); F(x') once, as both baselines are one image repeated.
            f_x = torch.cat(
                [
                    _target_logit(model, x[i : i + chunk], y[i : i + chunk])
                    for i in range(0, b, chunk)
                ]
            )
            f_base = model(base[:1])[0].float()[y]
            gap = f_x - f_base
    delta = attributions.flatten(1).sum(1) - gap
    return attributions, delta


def ig_map(attributions: torch.Tensor) -> torch.Tensor:
    """The map the paper stores: sum over RGB of |IG|, (B, 3, H, W) -> (B, H, W), non-negative."""
    if attributions.dim() != 4:
        raise ConfigError(
            f"attributions have shape {tuple(attributions.shape)}; expected (B, C, H, W)"
        )
    return attributions.abs().sum(1)


# --- the store of IG maps --------------------------------------------------------------------------


def _teacher_model(teacher_run: Run) -> nn.Module:
    """The trained model of a finished teacher run (as `pipeline.load_model`, which sits above)."""
    if not teacher_run.done:
        raise CheckpointError(
            f"teacher run {teacher_run.path} has not finished; get it with pipeline.teacher_run()"
        )
    model = models.teacher()
    model.load_state_dict(teacher_run.load_torch("model.pt"))
    return model.eval()


def _open_partial(path: Path, shape: tuple[int, ...], dtype: type, resume: bool) -> np.memmap:
    """A writable memory map of `shape`: the kept file when resuming, else a new one."""
    if resume:
        mm = np.lib.format.open_memmap(path, mode="r+")
        if mm.shape != shape or mm.dtype != np.dtype(dtype):
            raise ValueError(f"holds {mm.dtype} {mm.shape}, expected {np.dtype(dtype)} {shape}")
        return mm
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def ig_config(
    teacher_run: str,
    data: Dataset,
    n_steps: int,
    method: str,
    baseline: str,
    precision: str,
    fold_bn: bool = False,
) -> dict:
    """The run-cache config of the IG-map store of teacher run `teacher_run` (its directory name)
    on `data`: what names the store, so a caller can find a finished store, or a run depending on
    one, without computing anything."""
    config = {
        "teacher_run": teacher_run,
        "train_data": data.fingerprint,
        "n_steps": n_steps,
        "method": method,
        "baseline": baseline,
        "precision": precision,
    }
    if fold_bn:  # recorded only when set, so the stores computed before the option keep their hash
        config["fold_bn"] = True
    return config


def precompute_ig(
    teacher_run: Run,
    data: Dataset,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    baseline: str = "normalized-zero",
    precision: str = "fp32",
    batch_size: int = 256,
    chunk_size: int | None = None,
    fold_bn: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> Run:
    """The finished IG-map store of `teacher_run` on `data`, computed now if the cache lacks it.

    One map per image of `data` in dataset order (never shuffled, never augmented: the published
    code's IG file was both, paper.md §2), targets = the true labels. The run (kind `ig_maps`,
    config: teacher run, data fingerprint, n_steps, method, baseline, precision) holds
    `maps.npy` float16 (N, H, W) and `completeness.npy` float32 (N, 2): the delta and
    F(x) - F(x') per image. `batch_size` images are computed, written into a memory map, flushed
    and checkpointed at a time, so a killed precompute resumes after its last finished batch.
    `fold_bn=True` folds the teacher's BatchNorm into its convolutions first (1.4-1.6x faster,
    3-5e-4 relative difference; see `fold_batchnorm`). `device` defaults to CUDA when available.
    Read the maps with `load_ig_maps`.
    """
    quadrature(n_steps, method)  # validate before anything is created on disk
    baseline_input(torch.zeros(1, 3, 1, 1), baseline)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}; use one of {PRECISIONS}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
    config = ig_config(teacher_run.path.name, data, n_steps, method, baseline, precision, fold_bn)

    def compute(run: Run) -> dict:
        from tqdm.auto import tqdm

        where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = _teacher_model(teacher_run).to(where)
        if fold_bn:
            model = fold_batchnorm(model)  # once, not per batch
        if where.type == "cpu":
            # Gradients near the baseline underflow to denormals, which x86 computes slowly;
            # flushing them to zero is ~10 % faster here (train.fit makes the same choice).
            torch.set_flush_denormal(True)
        n, (h, w) = len(data), data.images.shape[-2:]
        files = {
            "maps": (run.path / "maps.npy", (n, h, w), np.float16),
            "completeness": (run.path / "completeness.npy", (n, 2), np.float32),
        }
        partial = {k: p.with_name(f"{p.stem}.partial.npy") for k, (p, _, _) in files.items()}
        state = run.load_checkpoint()
        start, seconds = (state["next"], state["seconds"]) if state is not None else (0, 0.0)
        for k, (final, _, _) in files.items():
            if start > 0 and final.exists():  # killed between the renames and DONE
                os.replace(final, partial[k])
        try:
            arrays = {
                k: _open_partial(partial[k], s, t, start > 0) for k, (_, s, t) in files.items()
            }
        except (OSError, ValueError) as e:
            warnings.warn(
                f"the partial IG maps in {run.path} cannot be resumed ({e}); starting over",
                stacklevel=2,
            )
            start, seconds = 0, 0.0
            arrays = {k: _open_partial(partial[k], s, t, False) for k, (_, s, t) in files.items()}
        resumed_from, attempt_seconds = start, 0.0
        bar = tqdm(
            total=n, initial=start, unit="img", desc="IG maps", disable=not progress, leave=False
        )
        for i in range(start, n, batch_size):
            j = min(i + batch_size, n)
            t0 = time.perf_counter()
            attr, delta = integrated_gradients(
                model,
                data.images[i:j],
                data.labels[i:j],
                n_steps,
                method,
                baseline,
                chunk_size,
                precision,
            )
            m = ig_map(attr)
            if m.max() > np.finfo(np.float16).max:
                raise ConfigError(
                    f"an IG map value {m.max().item():.4g} at images {i}..{j - 1} overflows "
                    "float16; the teacher's logits are implausibly large"
                )
            arrays["maps"][i:j] = m.cpu().numpy().astype(np.float16)
            gap = attr.flatten(1).sum(1) - delta
            arrays["completeness"][i:j] = torch.stack([delta, gap], 1).cpu().numpy()
            # The rows must be on disk before the checkpoint says they are finished.
            for k in arrays:
                arrays[k].flush()
            attempt_seconds += time.perf_counter() - t0
            seconds += time.perf_counter() - t0
            run.save_checkpoint({"next": j, "seconds": seconds})
            bar.update(j - i)
        bar.close()
        for k in list(arrays):
            arrays.pop(k).flush()  # and drop the last reference, which unmaps the file
        for k, (final, _, _) in files.items():
            os.replace(partial[k], final)

        maps = np.load(files["maps"][0], mmap_mode="r")
        delta, gap = np.load(files["completeness"][0]).T
        relative = np.abs(delta) / np.maximum(np.abs(gap), 1e-6)
        return {
            **config,
            "igkd_version": igkd.__version__,
            "data": data.source,
            "images": n,
            "shape": list(maps.shape),
            "dtype": "float16",
            "teacher_test_accuracy": teacher_run.metrics.get("final_test_accuracy"),
            "seconds": seconds,  # all attempts
            "resumed_from": resumed_from,  # first image the last attempt computed
            # throughput of the last attempt alone (a resumed run's earlier attempts ran elsewhere)
            "images_per_second": (n - resumed_from) / attempt_seconds if attempt_seconds else None,
            "interpolants_per_second": (n - resumed_from) * n_steps / attempt_seconds
            if attempt_seconds
            else None,
            "map_max": float(maps.max()),
            "map_mean": float(maps.mean(dtype=np.float64)),
            "delta_abs_mean": float(np.abs(delta).mean()),
            "delta_relative_median": float(np.median(relative)),
        }

    return get_or_run(STORE_KIND, config, compute)


def load_ig_maps(
    run_or_path: Run | str | Path, data: Dataset, teacher_run: Run | str
) -> np.ndarray:
    """The stored IG maps, (N, H, W) float16, as a read-only memory map in `data`'s order.

    `run_or_path` is an `ig_maps` run or its directory; `teacher_run` the teacher run (or its
    directory name, the config hash) the maps must come from. A store that is unfinished, or was
    computed for another teacher or other data (fingerprint), raises CheckpointError.
    """
    if isinstance(run_or_path, Run):
        path = run_or_path.path
    else:
        path = Path(run_or_path).expanduser()
        path = path.parent if path.name == "maps.npy" else path
    run = Run(STORE_KIND, {}, path)
    if not run.done:
        raise CheckpointError(
            f"{path} is not a finished IG-map store (no DONE file); compute it with "
            "attribution.precompute_ig(...) or pipeline.ig_run(...)"
        )
    stored = run.read_json("config.json")
    config = stored.get("config", {})
    teacher = teacher_run.path.name if isinstance(teacher_run, Run) else str(teacher_run)
    if stored.get("kind") != STORE_KIND:
        raise CheckpointError(f"{path} holds a {stored.get('kind')!r} run, not IG maps")
    if config.get("teacher_run") != teacher:
        raise CheckpointError(
            f"the IG maps in {path} come from teacher run {config.get('teacher_run')!r}, not "
            f"{teacher!r}; compute the maps for this teacher with pipeline.ig_run(...)"
        )
    if config.get("train_data") != data.fingerprint:
        raise CheckpointError(
            f"the IG maps in {path} were computed on data {config.get('train_data')!r}, not on "
            f"{data.fingerprint!r} ({data.source}, {len(data)} images); compute them for this "
            "data with pipeline.ig_run(...)"
        )
    try:
        maps = np.load(path / "maps.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{path / 'maps.npy'} is unreadable ({e}); delete {path} to recompute it"
        ) from e
    if maps.shape != (len(data), *data.images.shape[-2:]):
        raise CheckpointError(
            f"{path / 'maps.npy'} has shape {maps.shape}, expected "
            f"{(len(data), *data.images.shape[-2:])}; delete {path} to recompute it"
        )
    return maps
