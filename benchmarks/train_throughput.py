"""Training throughput of the 4.1x student: igkd's engine against the conventional pipeline.

Conventional (the published code's way, torchvision's CIFAR10 dataset style): a DataLoader over PIL
images with per-sample RandomCrop(32, 4) / RandomHorizontalFlip / ToTensor, NCHW float32.
igkd: the whole set as one uint8 tensor, batched crop/flip, channels_last, bf16 autocast where the
CPU has it, with the convs bf16 slows down (strided depthwise, stem) kept in fp32 (`igkd.train.fit`). Same model, optimiser (Adam 1e-3), batch size, images and machine,
measured in the same process. Prints images/s of each and the ratio.

    python benchmarks/train_throughput.py [--images 3200] [--batch-size 64] [--workers 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from torchvision import transforms

from igkd import data, models, train


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=3200, help="training images per measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (paper default 1)")
    args = p.parse_args(argv)
    try:
        ds = data.load_cifar10("train", download=False)
        source = ds.source
    except data.DataNotFoundError:
        ds, source = data.load_synthetic("train", args.images), "synthetic"
    ds = ds.subset(torch.arange(min(args.images, len(ds))))
    print(
        f"{len(ds)} images of {source}, batch {args.batch_size}, {torch.get_num_threads()} threads"
    )
    ref = conventional(ds, args.batch_size, args.workers)
    print(
        f"conventional (DataLoader + PIL transforms, NCHW fp32, {args.workers} worker): {ref:.4g} img/s"
    )
    ours, precision = engine(ds, args.batch_size)
    print(
        f"igkd engine (uint8 tensor, batched crop/flip, channels_last, {precision}): {ours:.4g} img/s"
    )
    print(f"ratio igkd / conventional: {ours / ref:.3g}x")


if __name__ == "__main__":
    main()
