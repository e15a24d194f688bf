"""Numeric precision of training and inference: which precision `auto` means on this device, the
autocast context, and the two CPU workarounds it needs (split from igkd.train, which re-exports
these names)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() else "fp32"


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class _Fp32Conv2d(nn.Conv2d):
    """A Conv2d that steps out of CPU bf16 autocast (same parameters, same state_dict keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _slow_in_bf16(m: nn.Module) -> bool:
    # oneDNN's bf16 backward of strided depthwise convs is 3-20x slower than its fp32 one on
    # AVX512-BF16 CPUs, and the 3-channel stem gains nothing from bf16 (benchmarks/train_throughput.py).
    if type(m) is not nn.Conv2d:
        return False
    return m.in_channels <= 3 or (m.groups > 1 and max(m.stride) > 1)


@contextlib.contextmanager
def cpu_bf16_exceptions(model: nn.Module, precision: str, device: torch.device):
    """While active, run the convs that bf16 makes slower in fp32 (CPU bf16 autocast only).

    Swaps their class in place and restores it on exit, so weights and checkpoints are untouched.
    """
    swapped = []
    if precision == "bf16" and device.type == "cpu":
        swapped = [m for m in model.modules() if _slow_in_bf16(m)]
    for m in swapped:
        m.__class__ = _Fp32Conv2d
    try:
        yield model
    finally:
        for m in swapped:
            m.__class__ = nn.Conv2d


# In-place activations whose backward needs their input clone that input first under autograd
# (torch 2.14: hardtanh_, hardswish_, silu_; relu_ does not): one extra copy of every activation.
_CLONING_INPLACE = (nn.Hardtanh, nn.Hardswish, nn.SiLU)  # nn.ReLU6 is a Hardtanh


@contextlib.contextmanager
def out_of_place_activations(model: nn.Module):
    """While active, run the model's in-place ReLU6/Hardtanh/Hardswish/SiLU out of place.

    The same values and gradients bit for bit, without the copy autograd makes of each in-place
    activation's input: about 1.1x on the 4.1x student's train step and on the teacher's IG (one
    thread, 2-core Xeon); the "allocator/memory" line of the benchmarks' profiles fell from 9-11 %
    to 6 % of a train step and from 8 % to 1-2 % of an IG chunk. Flags are restored on exit.
    """
    flipped = [m for m in model.modules() if isinstance(m, _CLONING_INPLACE) and m.inplace]
    for m in flipped:
        m.inplace = False
    try:
        yield model
    finally:
        for m in flipped:
            m.inplace = True
