"""Datasets as in-memory uint8 tensors, decoded once and cached with a fingerprint.

The whole CIFAR-10 training set is 150 MB as uint8 (N, 3, 32, 32), so training never touches PIL or a
per-sample DataLoader: batches are index lookups and augmentation is batched tensor work.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from igkd import paths
from igkd.errors import ConfigError, DataNotFoundError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # the teacher's input normalisation (huyvnphan)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64, with where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str  # for result tables, e.g. "CIFAR-10 (JPEG q75 copy)"
    fingerprint: str  # SHA-256 of the pixels and labels (first 16 hex digits)
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | np.ndarray) -> Dataset:
        """The images at `indices`, with a fingerprint that names the subset."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        tag = hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:8]
        return Dataset(
            self.images[idx],
            self.labels[idx],
            self.classes,
            self.source,
            f"{self.fingerprint}-{tag}",
            self.split,
        )


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 (16 hex digits) of the pixels and labels: what run configs record as the data."""
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float (B, 3, H, W) in [0, 1] -> the teacher's input space (CIFAR-10 mean/std)."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def to_float(images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1], or normalised with the CIFAR-10 mean/std."""
    x = images.float().div_(255)
    return normalize(x) if normalized else x


# --- CIFAR-10 from disk ----------------------------------------------------------------------------


def _find_cifar10(root: Path) -> tuple[str, Path] | None:
    """('torchvision' | 'imagefolder', path) of the first CIFAR-10 copy under `root`, if any."""
    if (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        return "torchvision", root
    for sub in ("cifar10", "cifar10-jpeg", "."):
        d = (root / sub).resolve()
        if all((d / s).is_dir() for s in SPLITS):
            return "imagefolder", d
    return None


def _describe(layout: str, path: Path) -> str:
    if layout == "torchvision":
        return "CIFAR-10"
    if "jpeg" in path.name.lower():
        return "CIFAR-10 (JPEG q75 copy)"
    return f"CIFAR-10 (image folder {path.name})"


def _source_key(layout: str, path: Path, split: str) -> str:
    """Cheap identity of the files on disk (names, sizes, mtimes): invalidates the decode cache.

    os.scandir, not pathlib: a sweep worker loads the data for every run, and pathlib's glob, sort
    and relative_to made this 2.5 s of the 3 s a cached ci run took.
    """
    h = hashlib.sha256(f"{layout}:{path}:{split}".encode())
    if layout == "torchvision":
        files = [
            (f.name, f.stat()) for f in sorted((path / "cifar-10-batches-py").glob("*_batch*"))
        ]
    else:
        files = []
        with os.scandir(path / split) as classes:
            for c in sorted((e for e in classes if e.is_dir()), key=lambda e: e.name):
                with os.scandir(c.path) as entries:
                    files += sorted((f"{c.name}/{e.name}", e.stat()) for e in entries)
    for name, st in files:
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_torchvision(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    # Read the pickles directly: torchvision's reader insists on the official MD5s, which rules out
    # testing on small files; the format is just {b"data": (N, 3072) uint8, b"labels": [...]}.
    import pickle

    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        f = root / "cifar-10-batches-py" / name
        if not f.is_file():
            raise DataNotFoundError(f"{f} is missing: the torchvision CIFAR-10 copy is incomplete")
        with open(f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _decode_imagefolder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from tqdm.auto import tqdm

    folder = root / split
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if tuple(found) != CIFAR10_CLASSES:
        raise DataNotFoundError(
            f"{folder} has class folders {found}; expected the CIFAR-10 classes {list(CIFAR10_CLASSES)}"
        )
    files = [(f, y) for y, c in enumerate(CIFAR10_CLASSES) for f in sorted((folder / c).iterdir())]
    images = np.empty((len(files), 3, 32, 32), dtype=np.uint8)
    for i, (f, _) in enumerate(tqdm(files, desc=f"decoding {split}", leave=False)):
        with Image.open(f) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (32, 32, 3):
            raise DataNotFoundError(f"{f} is {arr.shape[1]}x{arr.shape[0]}, not a 32x32 image")
        images[i] = arr.transpose(2, 0, 1)
    return images, np.array([y for _, y in files], dtype=np.int64)


def _cached(name: str, key: str, build) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Decoded arrays from the cache if intact and current, else `build()` and store them.

    The file stores the pixels' own fingerprint; a cache file that is truncated, corrupt or whose
    pixels no longer match it is reported and rebuilt, never used.
    """
    path = paths.cache_dir() / "data" / f"{name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                images, labels = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
                stored = str(z["fingerprint"])
            if fingerprint(images, labels) == stored:
                return images, labels, stored
            warnings.warn(
                f"decode cache {path} does not match its fingerprint; rebuilding", stacklevel=3
            )
        except Exception as e:  # a half-written or damaged file: rebuild it
            warnings.warn(f"decode cache {path} is unreadable ({e}); rebuilding", stacklevel=3)
    images_np, labels_np = build()
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    fp = fingerprint(images, labels)
    buf = io.BytesIO()
    np.savez(buf, images=images_np, labels=labels_np, fingerprint=np.array(fp))
    try:
        paths.atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only runs dir only costs a re-decode next time
        warnings.warn(f"could not write the decode cache {path}: {e}", stacklevel=3)
    return images, labels, fp


def load_cifar10(
    split: str = "train", root: str | Path | None = None, download: bool = True
) -> Dataset:
    """CIFAR-10 `split` ('train' 50,000 or 'test' 10,000 images) from `root` (default IGKD_DATA).

    Looks for the torchvision layout (`cifar-10-batches-py/`), then an ImageFolder layout
    (`cifar10/`, `cifar10-jpeg/` or `root` itself holding `train/<class>/*` and `test/<class>/*`),
    then tries torchvision's download into `root`.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; use one of {SPLITS}")
    root = Path(root).expanduser().resolve() if root is not None else paths.data_dir()
    found = _find_cifar10(root)
    reason = "download not attempted"
    if found is None and download:
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(str(root), train=True, download=True)
            found = _find_cifar10(root)
        except Exception as e:  # no internet, no write access, ...
            reason = f"download failed: {e}"
    if found is None:
        raise DataNotFoundError(
            f"no CIFAR-10 under {root} ({reason}). Put the torchvision copy in "
            f"{root}/cifar-10-batches-py, or an ImageFolder copy in {root}/cifar10/{{train,test}}/<class>/, "
            "or point IGKD_DATA at a directory that has one"
        )
    layout, path = found
    decode = _decode_torchvision if layout == "torchvision" else _decode_imagefolder
    key = _source_key(layout, path, split)
    images, labels, fp = _cached(f"cifar10-{split}", key, lambda: decode(path, split))
    return Dataset(images, labels, CIFAR10_CLASSES, _describe(layout, path), fp, split)


# --- synthetic data --------------------------------------------------------------------------------


def load_synthetic(split: str = "train", n: int | None = None, seed: int = 0) -> Dataset:
    """A learnable 10-class stand-in for CIFAR-10, for tests: smooth class patterns plus noise.

    Each class has a fixed low-frequency colour pattern (from `seed`); each image is its class
    pattern, randomly shifted by up to 4 pixels, plus per-pixel noise. Train and test share the
    patterns and differ in the noise. Default sizes: 5,000 train / 1,000 test.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; use one of {SPLITS}")
    n = n if n is not None else (5000 if split == "train" else 1000)
    g = torch.Generator().manual_seed(seed)
    patterns = torch.nn.functional.interpolate(
        torch.rand(10, 3, 4, 4, generator=g), size=(40, 40), mode="bilinear", align_corners=False
    )
    g.manual_seed(seed * 2 + 1 + SPLITS.index(split))
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    dx, dy = torch.randint(0, 9, (2, n), generator=g)
    images = torch.empty(n, 3, 32, 32)
    for i in range(n):
        images[i] = patterns[labels[i], :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
    images = (images + 0.25 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8)
    classes = tuple(f"class{i}" for i in range(10))
    return Dataset(images, labels, classes, "synthetic", fingerprint(images, labels), split)


def load(
    name: str = "cifar10",
    split: str = "train",
    root: str | Path | None = None,
    *,
    synthetic_fallback: bool = False,
) -> Dataset:
    """A dataset by name: `cifar10` or `synthetic`.

    `synthetic_fallback=True` (the ci profile only) returns synthetic data when no CIFAR-10 copy is
    found, with a warning; otherwise a missing dataset is an error, never a silent switch.
    """
    if name == "synthetic":
        return load_synthetic(split)
    if name != "cifar10":
        raise ConfigError(f"unknown dataset {name!r}; use 'cifar10' or 'synthetic'")
    try:
        return load_cifar10(split, root, download=not synthetic_fallback)
    except DataNotFoundError as e:
        if not synthetic_fallback:
            raise
        warnings.warn(f"{e}; using synthetic data (ci profile)", stacklevel=2)
        return load_synthetic(split)


# --- subsets and splits ----------------------------------------------------------------------------


def stratified_subset(labels: torch.Tensor, size: int | float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a class-stratified random subset: `size` images, or a fraction if < 1.

    The paper's Monte Carlo protocol ("Train80Rand") is `stratified_subset(labels, 0.8, seed=run)`.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    count = round(size * n) if isinstance(size, float) and size < 1 else int(size)
    if not 0 < count <= n:
        raise ConfigError(f"subset size {size!r} must select between 1 and {n} images")
    if count == n:
        return torch.arange(n)
    idx, _ = train_test_split(
        np.arange(n), train_size=count, stratify=labels.numpy(), random_state=seed
    )
    return torch.from_numpy(np.sort(idx))


def train_val_split(
    labels: torch.Tensor, val_size: int | float = 5000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) index tensors, stratified: a held-out split for tuning, never the test set."""
    val = stratified_subset(labels, val_size, seed)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask).squeeze(1), val
