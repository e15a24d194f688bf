"""CIFAR-10-C corruptions and robustness metrics, on a handful of synthetic 32x32 images."""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import pytest
import torch

from igkd import corruptions as C
from igkd import data
from igkd import robustness as R
from igkd.errors import ConfigError, DataNotFoundError


def _images(kind: str, n: int = 6, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 32, 32): smooth colour fields, optionally with CIFAR-like pixel texture.

    smooth: bilinear 4x4 colour fields in [0.2, 0.8]; textured: the same in [0.15, 0.85] plus
    per-pixel noise (sd 0.08); bright: in [0.6, 0.95] plus a little noise (sd 0.05).
    """
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.rand(n, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear", align_corners=True
    )
    if kind == "smooth":
        x = 0.2 + 0.6 * base
    elif kind == "textured":
        x = 0.15 + 0.7 * base + 0.08 * torch.randn(n, 3, 32, 32, generator=g)
    elif kind == "bright":
        x = 0.6 + 0.35 * base + 0.05 * torch.randn(n, 3, 32, 32, generator=g)
    else:
        raise ValueError(kind)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _frost_available() -> bool:
    try:
        C._frost_texture(0)
    except DataNotFoundError:
        return False
    return True


needs_frost = pytest.mark.skipif(
    not _frost_available(), reason="frost textures: pip install imagecorruptions --no-deps"
)


def _marks(name: str) -> list:
    return [needs_frost] if name == "frost" else []


ALL = [pytest.param(n, marks=_marks(n)) for n in C.CORRUPTIONS]


def _distance(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> float:
    """Mean absolute pixel distance (0..255) of the corrupted images to the clean ones."""
    out = C.corrupt(images, name, severity, seed=seed)
    return (out.float() - images.float()).abs().mean().item()


# --- the table -------------------------------------------------------------------------------------


def test_table_has_the_15_benchmark_and_4_extra_corruptions():
    assert len(C.CORRUPTIONS) == 19
    assert C.BENCHMARK == (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "frost",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    )
    assert C.EXTRA == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    for c in C.CORRUPTIONS.values():
        assert c.family in C.FAMILIES and len(c.params) == 5
    assert [C.CORRUPTIONS[n].family for n in C.EXTRA] == ["noise", "blur", "weather", "digital"]
    # spot checks against the spec's CIFAR parameters
    assert C.CORRUPTIONS["shot_noise"].parameter(5) == 50
    assert C.CORRUPTIONS["glass_blur"].parameter(4) == (0.25, 1, 2)
    assert C.CORRUPTIONS["snow"].parameter(5) == (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)
    assert C.CORRUPTIONS["elastic_transform"].parameter(2) == pytest.approx((1.6, 6.4, 2.24))
    # zoom factors: what the reference's np.arange(1, 1.06, 0.01) ... np.arange(1, 1.26, 0.01) give
    for zooms, end in zip(
        C.CORRUPTIONS["zoom_blur"].params, (1.06, 1.11, 1.16, 1.21, 1.26), strict=True
    ):
        assert zooms == pytest.approx(tuple(np.arange(1, end, 0.01)))


# --- every corruption ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_deterministic_for_a_seed_and_keeps_shape_and_dtype(name):
    images = _images("textured", n=3)
    a = C.corrupt(images, name, 3, seed=1)
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, C.corrupt(images, name, 3, seed=1))
    other = C.corrupt(images, name, 3, seed=2)
    assert torch.equal(a, other) != C.CORRUPTIONS[name].random
    assert not torch.equal(a, images)


# Which images and severities show the distance growing, where the reference's parameters do not
# make it grow everywhere:
# - glass_blur on smooth images: on pixel-level texture the shuffle alone moves the texture, and
#   severity 3's stronger blur (sigma 0.4 vs 0.05, same single shuffle) smooths some of it back.
# - spatter on bright images: severities 1-3 are water (pale turquoise added, clipped at white),
#   4-5 mud (dark brown replacing the image), so 3 < 5 only where brown is far from the image.
# - saturate, severities 1-2 and 3-5 separately: 1-2 desaturate (S x 0.3, x 0.1) and 3-5
#   saturate (S x 1.5 ..., + 0.2), and |0.7 S| > |0.5 S| puts severity 1 above 3 on every image.
# - frost and elastic_transform: separate tests below.
MONOTONE = {
    "glass_blur": ("smooth", (1, 3, 5)),
    "spatter": ("bright", (1, 3, 5)),
    "saturate": ("textured", (3, 4, 5)),
}


@pytest.mark.parametrize(
    "name", [n for n in C.CORRUPTIONS if n not in ("frost", "elastic_transform")]
)
def test_distance_to_the_clean_image_grows_with_severity(name):
    kind, severities = MONOTONE.get(name, ("textured", (1, 3, 5)))
    images = _images(kind)
    d = [_distance(images, name, s) for s in severities]
    assert d[0] < d[1] < d[2], d
    if name == "saturate":
        assert _distance(images, name, 1) < _distance(images, name, 2)


@needs_frost
def test_frost_grows_with_severity_for_the_same_texture_crop():
    # c0 x + c1 frost: the image fades (c0 1 -> 0.75) as the frost grows (c1 0.2 -> 0.45), and on
    # bright images the two cancel (frost s5 is below s3 there). On black images only the frost
    # counts; each severity draws its own texture and crop, so compare them on the same draws.
    frost = C.CORRUPTIONS["frost"]
    black = np.zeros((32, 32, 3))
    d = []
    for s in (1, 3, 5):
        outs = [
            C._to_u8(frost.fn(black, frost.parameter(s), C.image_rng(0, "frost", 1, i)))
            for i in range(4)
        ]
        d.append(np.mean(outs))
    assert d[0] < d[1] < d[2], d
    # and through corrupt(), averaged over enough black images
    images = torch.zeros(12, 3, 32, 32, dtype=torch.uint8)
    assert _distance(images, "frost", 1) < _distance(images, "frost", 5)


def test_elastic_transform_grows_in_its_elastic_part():
    # The reference's tuples are (alpha, sigma, affine jitter) x 32 px: the affine jitter shrinks
    # (2.56 -> 0.96 px) while the elastic field grows (alpha 0 -> 3.2 px), so the plain pixel
    # distance falls with severity on any image. What grows is the elastic part: the same draws
    # (same affine) with and without the elastic field.
    elastic = C.CORRUPTIONS["elastic_transform"]
    images = _images("textured", n=4)
    d = []
    for s in (1, 3, 5):
        alpha, sigma, affine = elastic.parameter(s)
        diffs = []
        for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
            x = img / 255.0
            with_field = elastic.fn(x, (alpha, sigma, affine), C.image_rng(0, "elastic", s, i))
            without = elastic.fn(x, (0.0, sigma, affine), C.image_rng(0, "elastic", s, i))
            diffs.append(np.abs(C._to_u8(with_field).astype(float) - C._to_u8(without)).mean())
        d.append(np.mean(diffs))
    assert d[0] == 0 < d[1] < d[2], d


def test_a_chunk_gets_the_images_of_the_full_set():
    images = _images("textured", n=5)
    for name in ("gaussian_noise", "snow", "glass_blur"):
        full = C.corrupt(images, name, 4, seed=3)
        part = C.corrupt(images[2:5], name, 4, seed=3, indices=[2, 3, 4])
        assert torch.equal(full[2:5], part)
        assert not torch.equal(full[:3], part)  # index 0..2 draws differ from 2..4


def test_bad_name_severity_or_images_raise_config_error_naming_them():
    images = _images("smooth", n=1)
    with pytest.raises(ConfigError, match="'gaussian_nois'"):
        C.corrupt(images, "gaussian_nois", 1)
    for bad in (0, 6, "3", 2.0, True):
        with pytest.raises(ConfigError, match="severity"):
            C.corrupt(images, "contrast", bad)
    with pytest.raises(ConfigError, match="uint8"):
        C.corrupt(images.float(), "contrast", 1)
    with pytest.raises(ConfigError, match="32"):
        C.corrupt(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "contrast", 1)
    with pytest.raises(ConfigError, match="seed"):
        C.corrupt(images, "contrast", 1, seed=-1)


def test_frost_without_the_textures_says_how_to_get_them(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    C._frost_texture.cache_clear()
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    try:
        with pytest.raises(DataNotFoundError, match="pip install imagecorruptions"):
            C.corrupt(_images("smooth", n=1), "frost", 1)
    finally:
        C._frost_texture.cache_clear()


# --- reference semantics on hand-computed cases ----------------------------------------------------


def test_motion_blur_is_imagemagicks_one_sided_line_kernel():
    # one white pixel, radius 6 (13 taps), sigma 1: tap i reads the pixel i steps along the angle,
    # with weight exp(-i^2/2) / 1.7533; 255 x those weights are 145.4, 88.2, 19.7, 1.6, 0.05, and
    # ImageMagick keeps 16 bits then truncates to 8: 145, 88, 19, 1, 0
    img = np.zeros((32, 32), np.uint8)
    img[16, 16] = 255
    expected = [145, 88, 19, 1, 0]
    right = C._motion_blur_u8(img, 6, 1, 0.0)  # angle 0 reads to the right: smears to the left
    assert right[16, 12:17][::-1].tolist() == expected
    assert right.sum() == sum(expected) and right[15].sum() == 0
    down = C._motion_blur_u8(img, 6, 1, 90.0)  # 90 degrees reads downwards: smears upwards
    assert down[12:17, 16][::-1].tolist() == expected


def test_glass_shuffle_is_the_references_sequential_copy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    dy, dx = rng.integers(-1, 1, size=(2, 30, 30))
    ref = y.copy()
    for h in range(31, 1, -1):  # the reference's loop and its view "swap"
        for w in range(31, 1, -1):
            hp, wp = h + dy[h - 2, w - 2], w + dx[h - 2, w - 2]
            ref[h, w], ref[hp, wp] = ref[hp, wp], ref[h, w]
    assert np.array_equal(C._glass_shuffle(y, dy, dx), ref)


def test_hsv_brightness_and_saturation_by_hand():
    # (0.5, 0.25, 0): V = 0.5, S = 1, and the channels are V - S V k with k = (0, 0.5, 1)
    px = np.array([[[0.5, 0.25, 0.0]]])
    assert C._hsv_value_shift(px, 0.1) == pytest.approx(np.array([[[0.6, 0.3, 0.0]]]))
    assert C._hsv_saturation(px, 0.3, 0.0) == pytest.approx(np.array([[[0.5, 0.425, 0.35]]]))
    grey = np.array([[[0.4, 0.4, 0.4]]])  # S = 0, H = 0 (red): S -> 0.1 tints it red
    assert C._hsv_saturation(grey, 2.0, 0.1) == pytest.approx(np.array([[[0.4, 0.36, 0.36]]]))
    assert C._hsv_value_shift(np.zeros((1, 1, 3)), 0.2) == pytest.approx(np.full((1, 1, 3), 0.2))


def test_hsv_matches_scikit_image():
    color = pytest.importorskip("skimage.color")  # the reference's own conversions, where present
    x = np.random.default_rng(0).random((8, 8, 3))
    hsv = color.rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * 2.5 + 0.2, 0, 1)
    assert C._hsv_saturation(x, 2.5, 0.2) == pytest.approx(color.hsv2rgb(hsv))
    hsv = color.rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    assert C._hsv_value_shift(x, 0.3) == pytest.approx(color.hsv2rgb(hsv))


def test_contrast_by_hand():
    # per-channel mean 100/255 kept, deviations x 0.15, then truncated: 100 +- 0.15 x 50
    img = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    img[0, :, :16] = 150
    img[0, :, 16:] = 50
    out = C.corrupt(img, "contrast", 5)
    assert out[0, :, :16].unique().tolist() == [107]
    assert out[0, :, 16:].unique().tolist() == [92]


# --- the sweeps ------------------------------------------------------------------------------------


def test_jpeg_sweep():
    images = _images("textured", n=3)
    d = [(C.jpeg(images, q).float() - images.float()).abs().mean().item() for q in (95, 50, 10)]
    assert d[0] < d[1] < d[2]
    assert torch.equal(C.jpeg(images, 80), C.corrupt(images, "jpeg_compression", 1))
    for bad in (0, 96, 50.0):
        with pytest.raises(ConfigError, match="quality"):
            C.jpeg(images, bad)


def test_gaussian_noise_pixels_sweep():
    grey = torch.full((4, 3, 32, 32), 128, dtype=torch.uint8)
    assert torch.equal(C.gaussian_noise_pixels(grey, 0.0), grey)
    noisy = C.gaussian_noise_pixels(grey, 10.0, seed=1)
    assert torch.equal(noisy, C.gaussian_noise_pixels(grey, 10.0, seed=1))
    assert not torch.equal(noisy, C.gaussian_noise_pixels(grey, 10.0, seed=2))
    assert (noisy.float() - 128).std().item() == pytest.approx(10.0, rel=0.05)
    assert torch.equal(C.gaussian_noise_pixels(grey[2:], 10.0, seed=1, indices=[2, 3]), noisy[2:])
    with pytest.raises(ConfigError, match="sigma"):
        C.gaussian_noise_pixels(grey, 300.0)


# --- the cached set --------------------------------------------------------------------------------


def _dataset(n: int = 4) -> data.Dataset:
    images = _images("textured", n=n)
    labels = torch.arange(n) % 10
    fp = data.fingerprint(images, labels)
    return data.Dataset(images, labels, data.CIFAR10_CLASSES, "synthetic test", fp, "test")


def test_corrupted_set_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    clean = _dataset()
    first = C.corrupted_set(clean, "shot_noise", 3, seed=2, workers=1, progress=False)
    assert torch.equal(first.images, C.corrupt(clean.images, "shot_noise", 3, seed=2))
    assert torch.equal(first.labels, clean.labels)
    assert first.source == "synthetic test, shot_noise s3"
    assert first.fingerprint == data.fingerprint(first.images, first.labels) != clean.fingerprint
    assert len(list((tmp_path / "cache" / "data").glob("*.npz"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(C, "_generate", no_generation)
    second = C.corrupted_set(clean, "shot_noise", 3, seed=2, workers=1, progress=False)
    assert torch.equal(second.images, first.images) and second.fingerprint == first.fingerprint
    with pytest.raises(AssertionError, match="generated again"):  # another seed: another file
        C.corrupted_set(clean, "shot_noise", 3, seed=3, workers=1, progress=False)


def test_corrupted_set_across_processes_matches_one_process(monkeypatch, tmp_path):
    monkeypatch.setenv("IGKD_RUNS", str(tmp_path))
    clean = _dataset(4)
    parallel = C.corrupted_set(clean, "snow", 2, workers=2, progress=False)
    assert torch.equal(parallel.images, C.corrupt(clean.images, "snow", 2))


# --- robustness metrics ----------------------------------------------------------------------------


def test_corruption_error_by_hand():
    model = {("fog", s): 10.0 * s for s in range(1, 6)}  # 10, 20, ..., 50: sum 150
    reference = {("fog", s): 10.0 * s + 10 for s in range(1, 6)}  # 20, 30, ..., 60: sum 200
    assert R.corruption_error(model, reference) == {"fog": pytest.approx(75.0)}
    with pytest.raises(ConfigError, match="fog"):
        R.corruption_error(model, {k: v for k, v in reference.items() if k[1] != 5})
    with pytest.raises(ConfigError, match="'mist'"):
        R.corruption_error({("mist", 1): 1.0}, reference)


def test_mce_and_relative_mce_by_hand():
    sev = range(1, 6)
    reference = {(n, s): 30.0 for n in C.CORRUPTIONS for s in sev}
    # 14 corruptions as bad as the reference (CE 100), jpeg half as bad (CE 50): mCE = 1450 / 15
    model = {(n, s): 30.0 for n in C.BENCHMARK for s in sev}
    model.update({("jpeg_compression", s): 15.0 for s in sev})
    model.update({("spatter", s): 90.0 for s in sev})  # an extra: not in the mean
    assert R.mce(model, reference) == pytest.approx(1450 / 15)
    # relative, clean errors 5 (model) and 10 (reference): (30 - 5) / (30 - 10) = 125 % for 14,
    # (15 - 5) / (30 - 10) = 50 % for jpeg: (14 x 125 + 50) / 15 = 120
    assert R.relative_mce(model, reference, 5.0, 10.0) == pytest.approx(120.0)
    rel = R.relative_corruption_error(model, reference, 5.0, 10.0)
    assert rel["jpeg_compression"] == pytest.approx(50.0) and rel["fog"] == pytest.approx(125.0)
    model = {k: v for k, v in model.items() if k[0] != "fog"}
    with pytest.raises(ConfigError, match="fog"):
        R.mce(model, reference)


def test_ece_and_reliability_by_hand():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])
    # 5 bins of width 0.2: (0.8, 1] holds 0.95 (right) and 0.85 (wrong): acc 0.5, conf 0.9;
    # (0.6, 0.8] holds 0.7 (right); (0.4, 0.6] holds 0.55 (wrong).
    # ECE = 2/4 x 0.4 + 1/4 x 0.3 + 1/4 x 0.55 = 0.4125
    assert R.ece(probs, labels, n_bins=5) == pytest.approx(41.25)
    assert R.ece(torch.tensor(np.log(probs)), torch.tensor(labels), n_bins=5) == pytest.approx(
        41.25
    )
    table = R.reliability(probs, labels, n_bins=5)
    assert table["count"].tolist() == [0, 0, 1, 1, 2]
    assert table["accuracy"].tolist()[2:] == [0.0, 1.0, 0.5]
    assert table["confidence"].tolist()[2:] == pytest.approx([0.55, 0.7, 0.9])
    assert table["confidence"].isna().tolist() == [True, True, False, False, False]
    assert R.ece(np.eye(3)[[0, 1, 2]], [0, 1, 2]) == 0.0  # right and certain: calibrated


def test_temperature_scaling_softens_an_over_confident_model():
    # logits 10 on the predicted class of 3, right 70 % of the time. With a = 10 / T the NLL is
    # log(e^a + 2) - 0.7 a, least where e^a = 0.7 x 2 / 0.3: T = 10 / log(14 / 3) = 6.4917
    n = 200
    labels = np.arange(n) % 3
    pred = labels.copy()
    pred[: int(0.3 * n)] = (labels[: int(0.3 * n)] + 1) % 3
    logits = 10.0 * np.eye(3)[pred]
    t = R.fit_temperature(logits, labels)
    assert t == pytest.approx(10 / math.log(14 / 3), rel=1e-3)
    assert R.nll(logits, labels, t) < R.nll(logits, labels) - 1.0
    assert R.ece(logits / t, labels) < R.ece(logits, labels)
