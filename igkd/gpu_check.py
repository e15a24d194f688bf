"""`make gpu-check`: one short script for the day a CUDA GPU is lent (under 10 minutes on one GPU).

It runs the CUDA-only tests (`pytest -m cuda`), then the `paper` profile's recipes for a few hundred
steps each, as they are but for their length: the teacher (SGD, batch 256), IG at the profile's 50
Gauss-Legendre points on a few thousand images, and a KD_IG_AT student (Adam 1e-3, batch 64) on
those images, in fp32 (the paper's precision) and again in AMP, compared. It prints per-epoch times
and the projected GPU hours of the whole paper book. Runs go to a temporary run cache, never the
reader's. On a machine without CUDA it checks its arguments and stops with one line (exit 2).

    python -m igkd.gpu_check [--images 6400] [--teacher-steps 200] [--student-epochs 2]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

from igkd import paths, profiles

NO_CUDA_EXIT = 3  # argparse's usage errors exit 2
TRAIN_IMAGES = 50_000  # the paper's training set: what the projections scale to


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's arguments, checked: positive counts, images a multiple of the student batch."""
    p = argparse.ArgumentParser(prog="python -m igkd.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=6400, help="images for IG and the student")
    p.add_argument("--teacher-steps", type=int, default=200, help="teacher SGD steps (batch 256)")
    p.add_argument("--student-epochs", type=int, default=2, help="student epochs on --images")
    p.add_argument("--ig-steps", type=int, default=None, help="IG points (default: the profile's)")
    p.add_argument("--skip-tests", action="store_true", help="skip `pytest -m cuda`")
    p.add_argument(
        "--cpu", action="store_true",
        help="without CUDA, run the same steps on the CPU (tiny sizes: a test that the script works)",
    )  # fmt: skip
    args = p.parse_args(argv)
    for name in ("images", "teacher_steps", "student_epochs", "ig_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}; use a positive integer")
    if args.images % 64:
        p.error(f"--images={args.images}; use a multiple of 64 (the paper's student batch)")
    return args


def _data(n: int):
    """(train subset of `n` images, test set): CIFAR-10 if it is here, else synthetic (said so)."""
    from igkd import data
    from igkd.errors import DataNotFoundError

    try:
        train, test = (data.load_cifar10(s, download=False) for s in ("train", "test"))
    except DataNotFoundError:
        print("no CIFAR-10 here: timing on synthetic images of the same shape (accuracy is moot)")
        train = data.load_synthetic("train", TRAIN_IMAGES)
        test = data.load_synthetic("test", 10_000)
    n = min(n, len(train))
    return train.subset(data.stratified_subset(train.labels, n, seed=0)), test


def _timed(fn, *args, **kwargs) -> tuple[object, float]:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - start


def _student(prof, teacher, train, test, maps, precision: str, epochs: int) -> tuple[dict, float]:
    """A 4.1x KD_IG_AT student with the paper's recipe in `precision`; (metrics, seconds)."""
    import torch

    from igkd import losses, models
    from igkd import train as training

    torch.manual_seed(0)
    student = models.student(compression=4.1)
    layer = models.attention_layer(models.compression_row(4.1).layers_removed)
    recipe = training.Recipe(**{**prof.student_recipe, "epochs": epochs, "precision": precision})
    distill = training.Distillation(
        losses.method("KD_IG_AT"), teacher, maps, student_layer=layer, teacher_layer=layer
    )
    return _timed(training.fit, student, train, recipe, test=test, progress=False, distill=distill)


def cuda_test_files(tests: Path) -> list[Path]:
    """The test files that hold CUDA tests (`pytest.mark.cuda`). Only these are collected: the
    other files import packages (nbformat, dask, optuna, ...) that a bare CUDA image lacks."""
    found = sorted(f for f in tests.glob("test_*.py") if "pytest.mark.cuda" in f.read_text())
    if not found:
        raise FileNotFoundError(f"no test file under {tests} uses pytest.mark.cuda")
    return found


def projection(seconds_per_image: dict[str, float], experiments: dict) -> list[tuple[str, float]]:
    """(part, GPU hours) of the whole paper book from measured seconds per training image
    (`teacher`, `ig`, `student` epochs), scaled to 50,000 images and the paper profile's counts.
    An upper bound for the students: each is timed as the 4.1x KD_IG_AT (the costliest method)."""
    epoch = {k: v * TRAIN_IMAGES / 3600 for k, v in seconds_per_image.items()}
    e, methods = 100, 8
    mc_methods = len(
        experiments.get("monte_carlo_methods") or ["student", "KD", "KD_IG", "KD_IG_AT"]
    )
    parts = [
        ("teacher, 100 epochs", e * epoch["teacher"]),
        ("IG maps, 50,000 images", epoch["ig"]),
        ("ablation (8 methods x runs x 100 epochs)",
         methods * experiments["ablation_runs"] * e * epoch["student"]),
        ("Monte Carlo (methods x runs x 100 epochs on 80 %)",
         mc_methods * experiments["monte_carlo_runs"] * e * 0.8 * epoch["student"]),
        ("compression sweep (8 x 4 methods x runs x 100 epochs)",
         8 * 4 * experiments["sweep_runs"] * e * epoch["student"]),
        ("tuning (trials x 100 epochs)", experiments["tuning_trials"] * e * epoch["student"]),
    ]  # fmt: skip
    return [*parts, ("whole paper book", sum(h for _, h in parts))]


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from igkd import attribution, data, models
    from igkd import train as training

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print(
            f"no CUDA device (torch {torch.__version__}, cuda.is_available() is False): "
            "make gpu-check needs one; arguments are fine",
            file=sys.stderr,
        )
        return NO_CUDA_EXIT
    where = torch.cuda.get_device_name(0) if cuda else "CPU (--cpu: a check of the script only)"
    print(f"device: {where}, torch {torch.__version__}")
    status = 0
    # CPU autocast's mixed precision is bf16, and only where the CPU has it natively (else fp32).
    amp = "fp16" if cuda else training.resolve_precision("auto", torch.device("cpu"))
    if cuda and not args.skip_tests:
        print("== CUDA-only tests (pytest -m cuda)", flush=True)
        root = paths.REPO_ROOT
        status = subprocess.call(
            [sys.executable, "-m", "pytest", *map(str, cuda_test_files(root / "tests")),
             "-m", "cuda", "-q", "-p", "no:cacheprovider"], cwd=root,
        )  # fmt: skip
    prof = profiles.PROFILES["paper"]  # the recipes as they are; IGKD_PRECISION is not applied
    # The data first, from the reader's decode cache: decoding the 60,000 JPEGs again in the
    # temporary run cache was ~17 s of the ~70 s CPU dry run on a 2-core AVX2 EPYC.
    train, test = _data(max(args.images, args.teacher_steps * 256))
    if not cuda:  # the dry run checks the script, not accuracy: 500 test images suffice
        test = test.subset(data.stratified_subset(test.labels, 500, seed=0))
    with tempfile.TemporaryDirectory(prefix="igkd-gpu-check-") as tmp, _runs_in(Path(tmp)):
        # Stratified, not the first n: an ImageFolder copy is stored class by class.
        sub = train.subset(data.stratified_subset(train.labels, args.images, seed=0))
        print(f"== teacher: {args.teacher_steps} steps of the paper's teacher recipe", flush=True)
        torch.manual_seed(0)
        teacher = models.teacher()
        t_images = train.subset(
            data.stratified_subset(train.labels, min(len(train), args.teacher_steps * 256), seed=0)
        )
        recipe = training.Recipe(**{**prof.teacher_recipe, "epochs": 1})
        t_metrics, t_sec = _timed(
            training.fit, teacher, t_images, recipe, test=test, progress=False
        )
        print(
            f"   {t_sec:.1f} s, {len(t_images) / t_sec:.0f} img/s, precision {t_metrics['precision']}"
        )
        ig_steps = args.ig_steps or prof.ig_n_steps
        print(f"== IG: {args.images} images at {ig_steps} Gauss-Legendre points", flush=True)
        teacher.eval()
        maps, ig_sec = _timed(
            attribution.ig_maps, teacher, sub.images, sub.labels, n_steps=ig_steps,
            batch_size=prof.ig_batch_size,
        )  # fmt: skip
        print(f"   {ig_sec:.1f} s, {args.images / ig_sec:.0f} img/s")
        results = {}
        for precision in ("fp32", amp):
            print(f"== KD_IG_AT student, {args.student_epochs} epochs, {precision}", flush=True)
            m, sec = _student(prof, teacher, sub, test, maps, precision, args.student_epochs)
            results[precision] = (m, sec)
            print(f"   {sec:.1f} s ({sec / args.student_epochs:.1f} s/epoch), "
                  f"test {m['final_test_accuracy']:.4g} %")  # fmt: skip
        (m32, s32), (m16, s16) = results["fp32"], results[amp]
        print(f"== fp32 vs AMP: accuracy {m32['final_test_accuracy']:.4g} vs "
              f"{m16['final_test_accuracy']:.4g} % (difference "
              f"{m16['final_test_accuracy'] - m32['final_test_accuracy']:+.3g} pp), "
              f"AMP {s32 / s16:.3g}x the speed of fp32")  # fmt: skip
        per_image = {
            "teacher": t_sec / len(t_images),
            "ig": ig_sec / args.images,
            "student": s32 / (args.student_epochs * args.images),
        }
        print(f"== projected hours of the paper book (fp32, {where}):")
        for part, hours in projection(per_image, prof.experiments):
            print(f"   {part:<58} {hours:8.3g} h")
        if not all(math.isfinite(m["final_test_accuracy"]) for m, _ in results.values()):
            print("a student's accuracy is not finite", file=sys.stderr)
            status = status or 1
    return status


def _runs_in(root: Path):
    return paths.runs_dir_override(root)  # nothing lands in the reader's run cache


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
