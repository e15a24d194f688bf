"""Integrated-gradients throughput of the teacher: igkd against Captum called as the paper's code.

Captum, the published way (paper.md §2): `IntegratedGradients(teacher).attribute(x, target=y,
baselines=x * 0)` on batches of 8 normalised images, n_steps 50, Gauss-Legendre, no internal
batching, parameters requiring gradients, NCHW. igkd: `igkd.attribution.integrated_gradients`
(parameters frozen, chunks of 32 interpolants, one autograd.grad per chunk, channels_last), fp32.
Same teacher, images and machine, measured in the same process. Prints images/s of each, the
ratio, the largest relative difference max|igkd - captum| / max|captum| (against Captum on the
same channels_last teacher, as published (NCHW), and on a float64 copy of the teacher), and the fraction of the machine's measured
fp32 matmul peak that igkd's IG reaches. Also timed: igkd with the teacher's BatchNorm folded into
its convolutions (`fold_bn=True`) and, with --bf16, under bf16 autocast. Every speed figure is
printed beside the CPU model, torch's thread count and the memory allocator; then (--profile, the
default) where igkd's IG spends its time per chunk, by operator category (torch.profiler).

Captum as published allocates so much per call that the allocator moves its speed about 3x (glibc
malloc against tcmalloc): a ratio is honest only with both sides under the same allocator.
`--allocators glibc,glibc-nommap,tcmalloc` runs the whole benchmark once per allocator, each in a
subprocess (tcmalloc/jemalloc through LD_PRELOAD; glibc-nommap is glibc with MALLOC_MMAP_MAX_=0),
and ends with one line per allocator: both sides and their ratio.

    python benchmarks/ig_throughput.py [--images 16] [--n-steps 50] [--chunk-size 32]
                                       [--teacher-run RUN_DIR] [--bf16]
                                       [--no-profile] [--allocators glibc,tcmalloc]

The teacher is RUN_DIR's, else the newest finished teacher run in $IGKD_RUNS, else a random one.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
from captum.attr import IntegratedGradients
from torch.utils.flop_counter import FlopCounterMode

from igkd import data, models, runs
from igkd.attribution import integrated_gradients

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `igkd bench` runs this file by path
import _env  # noqa: E402


def load_teacher(run_dir: str | None) -> tuple[torch.nn.Module, str]:
    """(teacher in eval mode, where it came from)."""
    if run_dir is not None:
        run = runs.Run("teacher", {}, Path(run_dir))
    else:
        found = runs.find_runs("teacher")
        run = found[-1] if found else None
    net = models.teacher()
    if run is None:
        torch.manual_seed(0)
        return net.eval(), "randomly initialised (no teacher run found; logits are ~1e-10)"
    net.load_state_dict(run.load_torch("model.pt"))
    acc = run.metrics.get("final_test_accuracy")
    return net.eval(), f"run {run.path} ({acc:.4g} % test accuracy)" if acc else f"run {run.path}"


def captum_published(model, images, labels, n_steps: int, batch_size: int = 8):
    """Captum as Compute_IGs.py calls it; returns (attributions, seconds)."""
    ig = IntegratedGradients(model)
    out = []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        x = data.to_float(images[i : i + batch_size], normalized=True)
        x = x.to(next(model.parameters()).dtype)
        out.append(
            ig.attribute(x, target=labels[i : i + batch_size], baselines=x * 0, n_steps=n_steps)
        )
    return torch.cat(out), time.perf_counter() - start


def ours(model, images, labels, n_steps: int, chunk_size: int, precision="fp32", fold_bn=False):
    start = time.perf_counter()
    attr, _ = integrated_gradients(
        model, images, labels, n_steps, chunk_size=chunk_size, precision=precision, fold_bn=fold_bn
    )
    return attr, time.perf_counter() - start


def ours_profile(model, images, labels, n_steps: int, chunk_size: int, unprofiled_ms) -> str:
    """The profile table of a few chunks of `integrated_gradients` (one step = one chunk)."""
    prof = _env.StepProfile(model, outside="data")  # around the model: interpolants, sums
    need = torch.arange(math.ceil(prof.steps_needed * chunk_size / n_steps)) % len(images)
    with prof:
        integrated_gradients(model, images[need], labels[need], n_steps, chunk_size=chunk_size)
    return prof.table(f"igkd's IG, chunks of {chunk_size} interpolants, fp32", unprofiled_ms)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| over all images and pixels."""
    return ((a - b).abs().max() / b.abs().max()).item()


def matmul_peak(n: int = 1024, seconds: float = 2.0) -> float:
    """Measured fp32 matmul throughput, GFLOP/s (the best of repeated n x n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best / 1e9


def flops_per_interpolant(model, chunk_size: int) -> float:
    """FLOPs of one interpolant in igkd's IG: forward plus the gradient w.r.t. the input only.

    Counted by PyTorch on one chunk done as integrated_gradients does it (frozen parameters,
    channels_last); `.backward()` stands in for autograd.grad, which FlopCounterMode's module
    hooks do not support, and runs the same kernels.
    """
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(chunk_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)[:, 0].sum().backward()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return counter.get_total_flops() / chunk_size


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16, help="images per measurement (default 16)")
    p.add_argument("--n-steps", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=32, help="igkd interpolants per chunk")
    p.add_argument("--teacher-run", default=None, help="teacher run directory")
    p.add_argument("--bf16", action="store_true", help="also time igkd with bf16 autocast")
    _env.add_arguments(p, "a few chunks of igkd's IG")
    args = p.parse_args(argv)
    if args.allocators is not None:
        names = _env.parse_allocators(args.allocators)
        rest = _env.without_option(sys.argv[1:] if argv is None else argv, "--allocators")
        results = _env.rerun_under(str(Path(__file__).resolve()), rest, names)
        print("igkd IG vs Captum as published, one line per allocator:")
        for r in results:
            print(
                f"  {r['allocator']:<25} igkd {r['igkd']:.4g} img/s, captum {r['captum']:.4g} "
                f"img/s, ratio {r['ratio']:.3g}x  {r['tag']}"
            )
        return
    try:
        ds = data.load_cifar10("train", download=False)
    except data.DataNotFoundError:
        ds = data.load_synthetic("train", args.images)
    images, labels = ds.images[: args.images], ds.labels[: args.images]
    model, origin = load_teacher(args.teacher_run)
    torch.set_flush_denormal(True)  # for both: igkd's precompute runs this way
    tag = _env.tag()
    print(f"teacher: {origin}")
    print(
        f"{len(images)} images of {ds.source}, n_steps {args.n_steps}, Gauss-Legendre, "
        f"zero baseline in normalised space; {tag}, {_env.load_note()}"
    )

    # Captum gets its own NCHW copy: igkd leaves the model it is given in channels_last.
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    captum_published(reference, images[:1], labels[:1], 2)  # warm-up (thread pools, kernels)
    ref, t_ref = captum_published(reference, images, labels, args.n_steps)
    ours(model, images[:1], labels[:1], 2, args.chunk_size)  # warm-up
    attr, t_ours = ours(model, images, labels, args.n_steps, args.chunk_size)

    n = len(images)
    interp = n * args.n_steps
    print(
        f"captum as published (batch 8, no internal batching, params requiring grad, NCHW): "
        f"{n / t_ref:.4g} img/s ({interp / t_ref:.4g} interpolants/s) {tag}"
    )
    print(
        f"igkd (params frozen, chunks of {args.chunk_size} interpolants, channels_last, fp32): "
        f"{n / t_ours:.4g} img/s ({interp / t_ours:.4g} interpolants/s) {tag}"
    )
    print(f"ratio igkd / captum: {t_ref / t_ours:.4g}x (goal >= 5x) {tag}")
    _env.report({"igkd": n / t_ours, "captum": n / t_ref, "ratio": t_ref / t_ours})
    # ReLU6 kinks make the IG integrand sensitive to last-bit rounding: an interpolant whose
    # pre-activation sits within rounding of 0 or 6 can flip. NCHW and channels_last kernels round
    # differently, so compare like with like, and show Captum's own NCHW/channels_last gap.
    same_format = copy.deepcopy(model).to(memory_format=torch.channels_last)
    ref_cl, _ = captum_published(same_format, images, labels, args.n_steps)
    print("max relative difference, max|a - b| / max|b| (goal <= 1e-4 in fp32):")
    print(f"  igkd vs captum on the same channels_last teacher: {relative(attr, ref_cl):.4g}")
    print(f"  igkd vs captum as published (NCHW): {relative(attr, ref):.4g}")
    print(f"  captum channels_last vs captum NCHW (no igkd): {relative(ref_cl, ref):.4g}")
    # Which fp32 result is closer to the exact integral's quadrature? Captum on a float64 copy.
    exact, _ = captum_published(copy.deepcopy(reference).double(), images, labels, args.n_steps)
    print("  against float64 Captum (the same quadrature without fp32 rounding):")
    print(f"    igkd fp32: {relative(attr.double(), exact):.4g}")
    print(f"    captum as published, fp32 NCHW: {relative(ref.double(), exact):.4g}")

    folded, t_fold = ours(model, images, labels, args.n_steps, args.chunk_size, fold_bn=True)
    print(
        f"igkd with BatchNorm folded into the convolutions (fold_bn=True): {n / t_fold:.4g} img/s "
        f"({t_ref / t_fold:.4g}x captum) {tag}, max relative difference to igkd "
        f"{relative(folded, attr):.4g}"
    )

    if args.bf16:
        attr16, t16 = ours(model, images, labels, args.n_steps, args.chunk_size, "bf16")
        print(
            f"igkd bf16 autocast: {n / t16:.4g} img/s ({t_ref / t16:.4g}x captum) {tag}, "
            f"max relative difference to fp32 igkd {relative(attr16, attr):.4g}"
        )

    peak = matmul_peak()
    flops = flops_per_interpolant(model, args.chunk_size)
    achieved = flops * interp / t_ours / 1e9
    print(
        f"fp32 matmul peak {peak:.4g} GFLOP/s; igkd IG {flops / 1e6:.4g} MFLOP per interpolant "
        f"-> {achieved:.4g} GFLOP/s = {100 * achieved / peak:.3g} % of peak {tag}"
    )
    if args.profile:
        unprofiled = 1e3 * args.chunk_size * t_ours / interp
        print(ours_profile(model, images, labels, args.n_steps, args.chunk_size, unprofiled))


if __name__ == "__main__":
    main()
