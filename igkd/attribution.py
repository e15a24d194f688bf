"""Integrated gradients of the teacher, fast and batched (the store of IG maps is `igkd.ig_store`).

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

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from igkd.data import normalize
from igkd.errors import ConfigError
from igkd.train import out_of_place_activations

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
BASELINES = ("normalized-zero", "black")
PRECISIONS = ("fp32", "bf16")


# --- integrated gradients --------------------------------------------------------------------------


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights), each (n_steps,) float64: Captum's integration points in [0, 1] and weights.

    `gausslegendre`: NumPy's Legendre-Gauss nodes and weights mapped from [-1, 1] to [0, 1].
    Riemann rules: left, right, middle and trapezoid points on a uniform grid, each weight 1/n.
    Captum's `riemann_trapezoid` puts its n points at linspace(0, 1, n) (spacing 1/(n-1)) but keeps
    weights 1/n halved at both ends, so its weights sum to 1 - 1/n rather than 1; we copy that so
    the attributions equal Captum's, and the completeness delta shows the resulting bias.
    """
    if method not in RULES:
        raise ConfigError(f"method={method!r}; use one of {RULES}")
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


def ig_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    n_steps: int = 50,
    batch_size: int = 256,
    **options: object,
) -> torch.Tensor:
    """The overlay's maps for a dataset held in memory: `ig_map(integrated_gradients(...))` over
    `images` uint8 (N, 3, H, W) and `targets` (N,) in batches of `batch_size`; returns (N, H, W)
    float32 on the CPU, in input order. `options` are `integrated_gradients`' (method, baseline,
    chunk_size, precision, fold_bn). For a large set that must survive a kill, use the resumable
    store (`igkd.ig_store.precompute_ig`)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}; expected a positive integer")
    targets = torch.as_tensor(targets, dtype=torch.long)
    if len(targets) != len(images):
        raise ConfigError(f"{len(images)} images but {len(targets)} targets; give one per image")
    out = [
        ig_map(
            integrated_gradients(
                model, images[i : i + batch_size], targets[i : i + batch_size], n_steps, **options
            )[0]
        ).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:])
