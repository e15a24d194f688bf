"""CIFAR-10-C: the 19 common corruptions at 5 severities, applied to uint8 image tensors.

The corruptions follow Hendrycks & Dietterich (ICLR 2019) with the CIFAR (32x32) parameters of
their generator, hendrycks/robustness `ImageNet-C/create_c/make_cifar_c.py`; each tuple field keeps
the meaning it has there. This is our own implementation on OpenCV, SciPy and Pillow: the images
follow the same distribution, not the same random draws. Where it departs from the reference, a
comment says so (motion blur runs on OpenCV, not ImageMagick). Reference quirks are kept on purpose,
since they made CIFAR-10-C: glass blur's "swap" copies, frost never picks the sixth texture, zoom
blur's severities 1-2 end at 1.06 and 1.11, and outputs are truncated (not rounded) to uint8.

Images are uint8 tensors (N, 3, 32, 32), as everywhere in igkd. Every image gets its own random
generator, derived from (seed, corruption, severity, image index), so a corrupted set is the same
whether it is made in one piece or in chunks across processes. Our test set is the JPEG q75 copy of
CIFAR-10, so the corruptions apply on top of an already re-encoded image: say so beside every table.

The metrics that go with them (mCE, calibration) are in `igkd.robustness`.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from igkd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from igkd.data import Dataset

VERSION = 1  # part of every cache key: bump when any corruption's output changes
SEVERITIES = (1, 2, 3, 4, 5)
FAMILIES = ("noise", "blur", "weather", "digital")

from igkd.corruption_ops import (  # noqa: E402, F401 (the functions, and helpers tests reach)
    SIZE,
    Image,
    _brightness,
    _clipped_zoom,
    _contrast,
    _defocus_blur,
    _elastic_transform,
    _fog,
    _frost,
    _frost_texture,
    _gaussian,
    _gaussian_blur,
    _gaussian_noise,
    _glass_blur,
    _glass_shuffle,
    _hsv_saturation,
    _hsv_value_shift,
    _impulse_noise,
    _jpeg_bytes,
    _jpeg_compression,
    _motion_blur,
    _motion_blur_u8,
    _pil_roundtrip,
    _pixelate,
    _plasma_fractal,
    _saturate,
    _shot_noise,
    _snow,
    _spatter,
    _speckle_noise,
    _to_u8,
    _zoom_blur,
    _zoom_matrix,
)

# --- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corruption:
    """One corruption: its family, its 5 severity parameters (CIFAR values) and its function.

    `params[s - 1]` is the parameter of severity s, with the reference's meaning (see the module's
    functions); `random` says whether the output depends on the seed.
    """

    name: str
    family: str
    params: tuple[Any, ...]
    fn: Callable[[Image, Any, np.random.Generator], Image]
    random: bool
    benchmark: bool

    def parameter(self, severity: int) -> Any:
        return self.params[_check_severity(severity) - 1]


def _c(name, family, params, fn, random=True, benchmark=True) -> tuple[str, Corruption]:
    return name, Corruption(name, family, tuple(params), fn, random, benchmark)


CORRUPTIONS: dict[str, Corruption] = dict(
    [
        _c("gaussian_noise", "noise", (0.04, 0.06, 0.08, 0.09, 0.10), _gaussian_noise),
        _c("shot_noise", "noise", (500, 250, 100, 75, 50), _shot_noise),
        _c("impulse_noise", "noise", (0.01, 0.02, 0.03, 0.05, 0.07), _impulse_noise),
        _c(
            "defocus_blur",
            "blur",
            ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
            _defocus_blur,
            random=False,
        ),
        _c(
            "glass_blur",
            "blur",
            ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
            _glass_blur,
        ),
        _c("motion_blur", "blur", ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)), _motion_blur),
        # zoom blur: the factors 1.00, 1.01, ... The reference's np.arange(1, 1.06, 0.01), ...,
        # np.arange(1, 1.26, 0.01) give 7, 12, 16, 21 and 26 of them (float round-off takes in
        # 1.06 and 1.11), so severities 1-2 end at 1.06 and 1.11, not 1.05 and 1.10
        _c(
            "zoom_blur",
            "blur",
            tuple(tuple(1 + 0.01 * k for k in range(n)) for n in (7, 12, 16, 21, 26)),
            _zoom_blur,
            random=False,
        ),
        _c(
            "snow",
            "weather",
            (
                (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
            ),
            _snow,
        ),
        _c("frost", "weather", ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)), _frost),
        _c("fog", "weather", ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), _fog),
        _c("brightness", "weather", (0.05, 0.1, 0.15, 0.2, 0.3), _brightness, random=False),
        _c("contrast", "digital", (0.75, 0.5, 0.4, 0.3, 0.15), _contrast, random=False),
        _c(
            "elastic_transform",
            "digital",
            tuple(
                (SIZE * a, SIZE * s, SIZE * f)
                for a, s, f in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06))
                + ((0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
            ),
            _elastic_transform,
        ),
        _c("pixelate", "digital", (0.95, 0.9, 0.85, 0.75, 0.65), _pixelate, random=False),
        _c("jpeg_compression", "digital", (80, 65, 58, 50, 40), _jpeg_compression, random=False),
        # the 4 extras (not in mCE)
        _c(
            "speckle_noise",
            "noise",
            (0.06, 0.1, 0.12, 0.16, 0.2),
            _speckle_noise,
            benchmark=False,
        ),
        _c(
            "gaussian_blur",
            "blur",
            (0.4, 0.6, 0.7, 0.8, 1.0),
            _gaussian_blur,
            random=False,
            benchmark=False,
        ),
        _c(
            "spatter",
            "weather",
            (
                (0.62, 0.1, 0.7, 0.7, 0.5, 0),
                (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1),
            ),
            _spatter,
            benchmark=False,
        ),
        _c(
            "saturate",
            "digital",
            ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
            _saturate,
            random=False,
            benchmark=False,
        ),
    ]
)
BENCHMARK: tuple[str, ...] = tuple(n for n, c in CORRUPTIONS.items() if c.benchmark)  # the 15
EXTRA: tuple[str, ...] = tuple(n for n, c in CORRUPTIONS.items() if not c.benchmark)  # the 4


# --- applying them ---------------------------------------------------------------------------------


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ConfigError(f"severity={severity!r}; use an integer 1..5")
    if severity not in SEVERITIES:
        raise ConfigError(f"severity={severity!r}; use an integer 1..5")
    return int(severity)


def spec(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; use one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def _check_images(images: torch.Tensor, size: int | None = SIZE) -> np.ndarray:
    """(N, 3, H, W) uint8 tensor -> (N, H, W, 3) uint8 array, or a ConfigError."""
    import torch

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ConfigError("images must be a uint8 tensor (N, 3, H, W)")
    if images.shape[1] != 3 or (size is not None and tuple(images.shape[2:]) != (size, size)):
        raise ConfigError(
            f"images are {tuple(images.shape)}; the CIFAR-10-C parameters are for (N, 3, 32, 32)"
        )
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def _to_tensor(hwc: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) uint8 tensor."""
    import torch

    return torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()


def _indices(n: int, indices: Sequence[int] | np.ndarray | torch.Tensor | None) -> np.ndarray:
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(idx) != n or (idx < 0).any():
        raise ConfigError(f"indices must be {n} non-negative image indices")
    return idx


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r}; use a non-negative integer")
    return int(seed)


def image_rng(seed: int, name: str, severity: int, index: int) -> np.random.Generator:
    """The random generator of image `index`: a function of (seed, name, severity, index) only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), severity, int(index)])


def _corrupt_hwc(
    hwc: np.ndarray, name: str, severity: int, seed: int, indices: np.ndarray
) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> the same, corrupted (no argument checks: a worker's entry point)."""
    c = CORRUPTIONS[name]
    param = c.params[severity - 1]
    out = np.empty_like(hwc)
    for k in range(len(hwc)):
        rng = image_rng(seed, name, severity, indices[k])
        out[k] = _to_u8(c.fn(hwc[k] / 255.0, param, rng))
    return out


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> torch.Tensor:
    """Corruption `name` at `severity` (1..5) of uint8 images (N, 3, 32, 32): uint8, same shape.

    Image k gets the random generator of (seed, name, severity, indices[k]); `indices` are the
    images' positions in the full set (default 0..N-1), so that a chunk or subset given its indices
    gets exactly the images the full set gets. Raises ConfigError for an unknown name, a severity
    outside 1..5 or images that are not (N, 3, 32, 32) uint8.
    """
    spec(name)
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    hwc = _check_images(images)
    out = _corrupt_hwc(hwc, name, severity, seed, _indices(len(hwc), indices))
    return _to_tensor(out)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Each uint8 image (N, 3, H, W) saved as a Pillow JPEG at `quality` (1..95) and decoded."""
    from PIL import Image as PILImage

    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ConfigError(f"quality={quality!r}; use an integer 1..95")
    if not 1 <= quality <= 95:
        raise ConfigError(f"quality={quality!r}; use an integer 1..95")
    hwc = _check_images(images, size=None)
    out = np.stack(
        [np.asarray(_jpeg_bytes(PILImage.fromarray(im), int(quality)).convert("RGB")) for im in hwc]
    )
    return _to_tensor(out)


def gaussian_noise_pixels(
    images: torch.Tensor,
    sigma: float,
    seed: int = 0,
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 images (N, 3, H, W) plus N(0, sigma) noise, sigma in pixel units (0..255), rounded
    to the nearest level and clipped to 0..255.

    Image k's standard normal draw depends on (seed, indices[k]) and not on sigma, so a sweep over
    sigma scales one fixed noise pattern per image (common random numbers: smoother curves).
    """
    if not 0 <= float(sigma) <= 255:
        raise ConfigError(f"sigma={sigma!r}; use a standard deviation in pixels, 0..255")
    seed = _check_seed(seed)
    hwc = _check_images(images, size=None)
    idx = _indices(len(hwc), indices)
    out = np.empty_like(hwc)
    for k in range(len(hwc)):
        z = image_rng(seed, "gaussian_noise_pixels", 0, idx[k]).standard_normal(hwc[k].shape)
        out[k] = np.clip(np.rint(hwc[k] + float(sigma) * z), 0, 255).astype(np.uint8)
    return _to_tensor(out)


# Workers import this module but not torch (3 s of a worker's start on a busy machine).
def _worker(hwc: np.ndarray, name: str, severity: int, seed: int, start: int) -> np.ndarray:
    return _corrupt_hwc(hwc, name, severity, seed, np.arange(start, start + len(hwc)))


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # the parallelism is across processes


def _generate(
    hwc: np.ndarray, name: str, severity: int, seed: int, workers: int, progress: bool
) -> np.ndarray:
    """All images of `hwc` (N, 32, 32, 3) corrupted, in chunks across `workers` processes."""
    import multiprocessing

    from tqdm.auto import tqdm

    n = len(hwc)
    chunk = max(1, min(250, math.ceil(n / max(1, workers))))
    starts = list(range(0, n, chunk))
    out = np.empty_like(hwc)
    bar = tqdm(total=n, desc=f"{name} s{severity}", unit="img", disable=not progress, leave=False)
    with bar:
        if workers <= 1 or len(starts) == 1:
            for s in starts:
                out[s : s + chunk] = _worker(hwc[s : s + chunk], name, severity, seed, s)
                bar.update(len(out[s : s + chunk]))
            return out
        # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would copy mid-use
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {
                pool.submit(_worker, hwc[s : s + chunk], name, severity, seed, s): s for s in starts
            }
            for f in as_completed(futures):
                s = futures[f]
                out[s : s + chunk] = f.result()
                bar.update(len(out[s : s + chunk]))
    return out


def corrupted_set(
    data: Dataset,
    name: str,
    severity: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Dataset:
    """`data` with corruption `name` at `severity`, made across `workers` processes (default: all
    CPUs) and cached under `<runs>/cache/data` like the decoded data.

    The cache key is derived from the clean data's fingerprint, name, severity, seed and VERSION;
    the result's fingerprint is that of its own pixels and labels, its source e.g.
    "CIFAR-10 (JPEG q75 copy), gaussian_noise s3". Image k is corrupted as `corrupt` with index k.
    The worker processes are spawned: a script that calls this with workers > 1 needs the usual
    `if __name__ == "__main__":` guard.
    """
    from igkd import data as data_mod

    spec(name)
    severity = _check_severity(severity)
    seed = _check_seed(seed)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r}; use a positive integer or None (all CPUs)")
    hwc = _check_images(data.images)
    if name == "frost":
        _frost_texture(0)  # a missing texture package fails here, not in every worker
    key = hashlib.sha256(
        f"{data.fingerprint}:{name}:{severity}:{seed}:v{VERSION}".encode()
    ).hexdigest()[:16]

    def build() -> tuple[np.ndarray, np.ndarray]:
        out = _generate(hwc, name, severity, seed, workers, progress)
        return out.transpose(0, 3, 1, 2).copy(), data.labels.numpy().copy()

    images, labels, fp = data_mod._cached(f"corrupt-{data.split}-{name}-s{severity}", key, build)
    return data_mod.Dataset(
        images, labels, data.classes, f"{data.source}, {name} s{severity}", fp, data.split
    )
