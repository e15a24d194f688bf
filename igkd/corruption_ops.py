"""The CIFAR-10-C corruption functions themselves, each (32, 32, 3) float image in [0, 1], its
severity parameter and a random generator -> the corrupted image, and the helpers they share.
`igkd.corruptions` holds the table of parameters and applies them to uint8 tensors."""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from igkd.errors import ConfigError, DataNotFoundError

if TYPE_CHECKING:
    pass

SIZE = 32  # the CIFAR parameters are for 32x32 images only
Image = np.ndarray  # one image (32, 32, 3) float64 in [0, 1], channels R, G, B


# --- helpers ---------------------------------------------------------------------------------------


def _gaussian(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0):
    """scikit-image's `filters.gaussian` (float input; channels last are not blurred across)."""
    from scipy.ndimage import gaussian_filter

    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return gaussian_filter(x, sigma=sigmas, mode=mode, truncate=truncate)


@functools.cache
def _zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with the end points aligned: scipy.ndimage.zoom's order-1
    grid (output pixel o samples input o * (n_in - 1) / (n_out - 1)), as a matrix."""
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of a (32, 32[, C]) array by `factor` (bilinear), cropped back to 32x32.

    The reference's scipy.ndimage.zoom(crop, factor, order=1), done as two small matrix products
    (10x faster; equal to float round-off).
    """
    h = x.shape[0]
    side = math.ceil(h / factor)
    top = (h - side) // 2
    crop = x[top : top + side, top : top + side]
    m = _zoom_matrix(side, int(round(side * factor)))  # scipy's output size
    out = np.tensordot(m, np.tensordot(m, crop, axes=(1, 0)), axes=(1, 1))  # (out, out[, C])
    out = np.swapaxes(out, 0, 1) if out.ndim == 2 else out.transpose(1, 0, 2)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def _to_u8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 by truncation, as the reference's `np.uint8(...)` cast does.

    The 1e-6 only keeps float round-off (k / 255 * 255 = k - 1e-13) from dropping a level.
    """
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 1e-6).astype(np.uint8)


def _motion_blur_u8(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage on a uint8 (H, W[, C]) image, returned as uint8.

    A one-sided line kernel: 2 * ceil(radius) + 1 taps i = 0, 1, ... with weights exp(-i^2 / 2
    sigma^2), tap i reading the pixel i steps along `angle` (degrees, x right, y down) rounded to the
    nearest pixel, edges replicated; the sum is rounded to 16 bits and truncated to 8 (Q16 -> PNG).
    """
    import cv2

    # Departs from the reference by running OpenCV, not ImageMagick: same kernel, edges and rounding
    # (bit for bit against ImageMagick 6.9.11 Q16 on random images at the CIFAR radii and sigmas).
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width)
    weights = np.exp(-(i**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    a = math.radians(angle)
    dx = np.ceil(i * math.cos(a) - 0.5).astype(int)
    dy = np.ceil(i * math.sin(a) - 0.5).astype(int)
    kernel = np.zeros((2 * width - 1, 2 * width - 1))
    np.add.at(kernel, (width - 1 + dy, width - 1 + dx), weights)
    out = cv2.filter2D(img.astype(np.float64), -1, kernel, borderType=cv2.BORDER_REPLICATE)
    q16 = np.clip(np.rint(out * 257.0), 0, 65535)
    return (q16 // 257).astype(np.uint8)


def _plasma_fractal(rng: np.random.Generator, size: int = SIZE, decay: float = 3.0) -> np.ndarray:
    """A (size, size) diamond-square height map in [0, 1]; `decay` divides the noise each octave.

    As in the reference, the noise added to each new point is wibble * U(-wibble, wibble) with
    wibble starting at 100, and the map wraps around (np.roll).
    """
    m = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        # squares: the centre of each step x step square gets the mean of its 4 corners + noise
        corners = m[0:size:step, 0:size:step]
        total = corners + np.roll(corners, -1, axis=0)
        total = total + np.roll(total, -1, axis=1)
        m[half:size:step, half:size:step] = total / 4 + wibble * rng.uniform(
            -wibble, wibble, total.shape
        )
        # diamonds: the edge midpoints get the mean of their 2 corners and 2 centres + noise
        centres = m[half:size:step, half:size:step]
        corners = m[0:size:step, 0:size:step]
        top = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        m[0:size:step, half:size:step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        m[half:size:step, 0:size:step] = left / 4 + wibble * rng.uniform(
            -wibble, wibble, left.shape
        )
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


@functools.cache
def _frost_texture(index: int) -> np.ndarray:
    """Frost texture `index` (0..5) as RGB uint8, resized by 0.2 as the CIFAR generator does."""
    import importlib.metadata

    import cv2

    name = f"frost{index + 1}.{'png' if index < 3 else 'jpg'}"
    try:
        path = importlib.metadata.distribution("imagecorruptions").locate_file(
            f"imagecorruptions/frost/{name}"
        )
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not os.path.isfile(path):
        raise DataNotFoundError(
            f"the frost corruption needs the frost textures ({name}) that ship in the "
            "imagecorruptions wheel: pip install imagecorruptions --no-deps"
        )
    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    bgr = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)  # bilinear, as cv2.resize's default
    return np.ascontiguousarray(bgr[..., ::-1])


def _hsv_value_shift(x: Image, shift: float) -> Image:
    """Add `shift` to V in HSV (clipped to [0, 1]), keeping H and S: scikit-image's rgb2hsv and
    hsv2rgb in closed form. With H and S fixed, RGB scales with V; black (H = S = 0) turns grey."""
    v = x.max(axis=2, keepdims=True)
    v_new = np.minimum(v + shift, 1.0)
    return np.where(v > 0, x * (v_new / np.where(v > 0, v, 1.0)), v_new)


def _hsv_saturation(x: Image, scale: float, add: float) -> Image:
    """S -> clip(S * scale + add) in HSV, keeping H and V: scikit-image's conversions in closed
    form. Each channel is V - S V k with k in [0, 1] fixed by H; a grey pixel has H = 0 (red)."""
    v = x.max(axis=2, keepdims=True)
    delta = v - x.min(axis=2, keepdims=True)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    s_new = np.clip(s * scale + add, 0.0, 1.0)
    k = np.divide(v - x, delta, out=np.zeros_like(x), where=delta > 0)
    k = np.where(delta > 0, k, np.array([0.0, 1.0, 1.0]))  # grey: hue 0 -> (V, p, p)
    return v - s_new * v * k


# --- the corruptions: (32, 32, 3) float [0, 1], parameter, rng -> (32, 32, 3) float -------------------


def _gaussian_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    return x + rng.normal(0.0, c, x.shape)


def _shot_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    return rng.poisson(x * c) / c


def _impulse_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    # scikit-image's random_noise(mode="s&p", amount=c): each value (channels independently) is
    # replaced with probability c, by 1 or 0 with equal odds
    flipped = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salt] = 1.0
    out[flipped & ~salt] = 0.0
    return out


def _speckle_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    return x + x * rng.normal(0.0, c, x.shape)


def _gaussian_blur(x: Image, c: float, rng: np.random.Generator) -> Image:
    return _gaussian(x, c)


def _glass_shuffle(y: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """One pass of the reference's local pixel shuffle on a (32, 32, C) image, shifts in {-1, 0}.

    The reference visits rows and columns 31 down to 2 and "swaps" x[h, w] with x[h + dy, w + dx]
    by `x[h, w], x[h', w'] = x[h', w'], x[h, w]`, which on numpy views is a copy, x[h, w] = x[h',
    w']. In that visit order every source is read before it is overwritten, so the pass is one
    gather; we keep the copy, since it is what made CIFAR-10-C. `dy`, `dx`: (30, 30) ints in {-1, 0}.
    """
    rows, cols = np.meshgrid(np.arange(2, SIZE), np.arange(2, SIZE), indexing="ij")
    out = y.copy()
    out[2:, 2:] = y[rows + dy, cols + dx]
    return out


def _glass_blur(x: Image, c: tuple[float, int, int], rng: np.random.Generator) -> Image:
    sigma, delta, iterations = c
    if delta != 1:  # all CIFAR severities shift by at most 1 pixel; _glass_shuffle relies on it
        raise ConfigError(f"glass blur is implemented for a max shift of 1 pixel, not {delta}")
    y = _to_u8(_gaussian(x, sigma))
    for _ in range(iterations):
        # the reference draws each shift with randint(-1, 1): -1 or 0
        dy, dx = rng.integers(-delta, delta, size=(2, SIZE - 2, SIZE - 2))
        y = _glass_shuffle(y, dy, dx)
    return _gaussian(y / 255.0, sigma)


def _defocus_blur(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    import cv2

    radius, alias_blur = c
    if radius > 8:  # the reference switches to a larger grid and 5x5 anti-aliasing there
        raise ConfigError(f"defocus blur is implemented for disk radii up to 8, not {radius}")
    xx, yy = np.meshgrid(np.arange(-8, 9), np.arange(-8, 9))  # a 17x17 grid, as the reference
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)  # anti-alias the disk
    return cv2.filter2D(x, -1, kernel)  # default border: reflect-101, as the reference


def _motion_blur(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    radius, sigma = c
    return _motion_blur_u8(_to_u8(x), radius, sigma, rng.uniform(-45, 45)) / 255.0


def _zoom_blur(x: Image, c: tuple[float, ...], rng: np.random.Generator) -> Image:
    out = x.copy()  # the reference averages the image with all zoomed copies (1.00 included)
    for f in c:
        out += _clipped_zoom(x, f)
    return out / (len(c) + 1)


def _snow(x: Image, c: tuple, rng: np.random.Generator) -> Image:
    mean, sd, zoom, threshold, blur_radius, blur_sigma, keep = c
    flakes = rng.normal(mean, sd, x.shape[:2])
    flakes = _clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = _to_u8(flakes)
    streaks = _motion_blur_u8(flakes, blur_radius, blur_sigma, rng.uniform(-135, -45)) / 255.0
    grey = x @ np.array([0.299, 0.587, 0.114])  # OpenCV's RGB2GRAY
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    streaks = streaks[..., None]
    return x + streaks + np.rot90(streaks, k=2)


def _frost(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    # The reference draws the texture with randint(5): frost6 is never used, and we keep that.
    texture = _frost_texture(int(rng.integers(5)))
    top = rng.integers(0, texture.shape[0] - SIZE)
    left = rng.integers(0, texture.shape[1] - SIZE)
    crop = texture[top : top + SIZE, left : left + SIZE] / 255.0
    return c[0] * x + c[1] * crop


def _fog(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    strength, decay = c
    peak = x.max()
    foggy = x + strength * _plasma_fractal(rng, SIZE, decay)[..., None]
    return foggy * peak / (peak + strength)


def _spatter(x: Image, c: tuple, rng: np.random.Generator) -> Image:
    import cv2

    mean, sd, sigma, threshold, intensity, mud = c
    liquid = _gaussian(rng.normal(mean, sd, x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if not mud:  # water: pale turquoise (175, 238, 238) drops with shaded edges
        # (clipped before the cast: the reference's astype(uint8) would wrap a rare value > 1)
        liquid8 = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid8, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
        m = liquid8 * dist
        peak = m.max()
        m = intensity * (m / peak if peak > 0 else m)
        return x + m[..., None] * (np.array([175, 238, 238]) / 255.0)
    # mud: brown (63, 42, 20) blobs replacing the image where the smoothed mask is >= 0.8
    m = _gaussian((liquid > threshold).astype(np.float64), intensity)
    m[m < 0.8] = 0
    m = m[..., None]
    return x * (1 - m) + m * (np.array([63, 42, 20]) / 255.0)


def _brightness(x: Image, c: float, rng: np.random.Generator) -> Image:
    return _hsv_value_shift(x, c)


def _contrast(x: Image, c: float, rng: np.random.Generator) -> Image:
    mean = x.mean(axis=(0, 1), keepdims=True)  # per channel, as the reference
    return (x - mean) * c + mean


def _saturate(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    return _hsv_saturation(x, c[0], c[1])


def _elastic_transform(x: Image, c: tuple[float, float, float], rng: np.random.Generator) -> Image:
    import cv2
    from scipy.ndimage import map_coordinates

    alpha, sigma, affine = c  # (elastic alpha, elastic sigma, affine jitter), all in pixels
    image = x.astype(np.float32)
    centre, half = SIZE // 2, SIZE // 3
    src = np.float32(
        [[centre + half] * 2, [centre + half, centre - half], [centre - half] * 2]
    )  # (x, y) points
    dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
    image = cv2.warpAffine(
        image, cv2.getAffineTransform(src, dst), (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT_101
    )
    dx = _gaussian(rng.uniform(-1, 1, (SIZE, SIZE)), sigma, mode="reflect", truncate=3) * alpha
    dy = _gaussian(rng.uniform(-1, 1, (SIZE, SIZE)), sigma, mode="reflect", truncate=3) * alpha
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    coords = np.stack([rows + dy, cols + dx])
    return np.stack(
        [map_coordinates(image[..., ch], coords, order=1, mode="reflect") for ch in range(3)],
        axis=-1,
    ).astype(np.float64)


def _pil_roundtrip(x: Image, op: Callable[[Any], Any]) -> Image:
    from PIL import Image as PILImage

    out = op(PILImage.fromarray(_to_u8(x)))
    return np.asarray(out.convert("RGB"), dtype=np.float64) / 255.0


def _jpeg_bytes(img: Any, quality: int) -> Any:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)  # Pillow's defaults otherwise (4:2:0 subsampling)
    buf.seek(0)
    out = PILImage.open(buf)
    out.load()
    return out


def _jpeg_compression(x: Image, c: int, rng: np.random.Generator) -> Image:
    return _pil_roundtrip(x, lambda im: _jpeg_bytes(im, c))


def _pixelate(x: Image, c: float, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    side = int(SIZE * c)
    box = PILImage.Resampling.BOX
    return _pil_roundtrip(x, lambda im: im.resize((side, side), box).resize((SIZE, SIZE), box))
