"""Training throughput of the 4.1x student: igkd's engine against the conventional pipeline.

Conventional (the published code's way, torchvision's CIFAR10 dataset style): a DataLoader over PIL
images with per-sample RandomCrop(32, 4) / RandomHorizontalFlip / ToTensor, NCHW float32.
igkd: the whole set as one uint8 tensor, batched crop/flip, channels_last, bf16 autocast where the
CPU has it, with the convs bf16 slows down (strided depthwise, stem) kept in fp32 (`igkd.train.fit`). Same model, optimiser (Adam 1e-3), batch size, images and machine,
measured in the same process. Prints images/s of each and the ratio, each beside the CPU model,
torch's thread count and the memory allocator, then (--profile, the default) where the engine's
step spends its time, by operator category (torch.profiler).

`--allocators glibc,glibc-nommap,tcmalloc` runs the whole benchmark once per allocator, each in a
subprocess (tcmalloc/jemalloc through LD_PRELOAD; glibc-nommap is glibc with MALLOC_MMAP_MAX_=0),
and ends with one line per allocator: both sides and their ratio.

    python benchmarks/train_throughput.py [--images 3200] [--batch-size 64] [--workers 1]
                                          [--no-profile] [--allocators glibc,tcmalloc]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torch.autograd.profiler import record_function
from torchvision import transforms

from igkd import data, models, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `igkd bench` runs this file by path
import _env  # noqa: E402


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per sample: array -> PIL -> transforms."""

    def __init__(self, ds: data.Dataset, transform):
        self.arrays = ds.images.permute(0, 2, 3, 1).numpy()
        self.labels = ds.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.arrays[i])), self.labels[i]


def conventional(ds: data.Dataset, batch_size: int, workers: int, warmup: int = 3) -> float:
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PILDataset(ds, tf), batch_size=batch_size, shuffle=True, num_workers=workers
    )
    torch.manual_seed(0)
    model = models.student(4.1).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == warmup:
            seen, start = 0, time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def engine(ds: data.Dataset, batch_size: int) -> tuple[float, str]:
    torch.manual_seed(0)
    recipe = train.Recipe(epochs=2, batch_size=batch_size, optimizer="adam", lr=1e-3)
    metrics = train.fit(models.student(4.1), ds, recipe, progress=False)
    return metrics["final_images_per_second"], metrics["precision"]  # epoch 2: warmed up


def engine_profile(ds: data.Dataset, batch_size: int, unprofiled_ms: float) -> str:
    """The profile table of a few `train.fit` steps, as `engine` runs them."""
    torch.manual_seed(0)
    model = models.student(4.1)
    prof = _env.StepProfile(model)
    n = min(len(ds), prof.steps_needed * batch_size)
    epochs = math.ceil(prof.steps_needed / (n // batch_size))
    recipe = train.Recipe(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=1e-3)
    view = train._view  # the batch's crop/flip/uint8->float: counted as data

    def data_view(*args, **kwargs):
        with record_function(_env.DATA_RANGE):
            return view(*args, **kwargs)

    train._view = data_view
    try:
        with prof:
            train.fit(model, ds.subset(torch.arange(n)), recipe, progress=False)
    finally:
        train._view = view
    return prof.table(f"igkd's train step, batch {batch_size}", unprofiled_ms)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3200, help="training images per measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (paper default 1)")
    _env.add_arguments(p, "a few engine steps")
    args = p.parse_args(argv)
    if args.allocators is not None:
        names = _env.parse_allocators(args.allocators)
        rest = _env.without_option(sys.argv[1:] if argv is None else argv, "--allocators")
        results = _env.rerun_under(str(Path(__file__).resolve()), rest, names)
        print("igkd engine vs DataLoader + PIL, one line per allocator:")
        for r in results:
            print(
                f"  {r['allocator']:<25} igkd {r['igkd']:.4g} img/s, conventional "
                f"{r['conventional']:.4g} img/s, ratio {r['ratio']:.3g}x  {r['tag']}"
            )
        return
    try:
        ds = data.load_cifar10("train", download=False)
        source = ds.source
    except data.DataNotFoundError:
        ds, source = data.load_synthetic("train", args.images), "synthetic"
    ds = ds.subset(torch.arange(min(args.images, len(ds))))
    tag = _env.tag()
    print(f"{len(ds)} images of {source}, batch {args.batch_size}; {tag}, {_env.load_note()}")
    ref = conventional(ds, args.batch_size, args.workers)
    print(
        f"conventional (DataLoader + PIL transforms, NCHW fp32, {args.workers} worker): "
        f"{ref:.4g} img/s {tag}"
    )
    ours, precision = engine(ds, args.batch_size)
    print(
        f"igkd engine (uint8 tensor, batched crop/flip, channels_last, {precision}): "
        f"{ours:.4g} img/s {tag}"
    )
    print(f"ratio igkd / conventional: {ours / ref:.3g}x {tag}")
    _env.report({"igkd": ours, "conventional": ref, "ratio": ours / ref})
    if args.profile:
        print(engine_profile(ds, args.batch_size, 1e3 * args.batch_size / ours))


if __name__ == "__main__":
    main()
