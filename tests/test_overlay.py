"""The IG overlay: the paper's formula, its statistics, and the joint crop/flip of image and map."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from igkd.augment import augment_batch, overlay, random_crop_flip
from igkd.errors import ConfigError


def _batch(b: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8)
    maps = torch.rand(b, 32, 32, generator=g) * 30  # the paper's maps reach about 33
    return images, maps


def _reference(x: torch.Tensor, m: torch.Tensor, s: torch.Tensor, blend: float, eps: float):
    """The paper's per-sample loop (paper.md §3), for one image, given its power s."""
    mp = m**s
    g = (mp - mp.min()) / (mp.max() - mp.min() + eps)
    return (1 - blend) * x + blend * g.expand_as(x)


def test_p1_is_the_paper_formula_per_image() -> None:
    images, maps = _batch(8)
    x = images.float() / 255
    out, applied = overlay(x, maps, p=1.0, blend=0.3, generator=torch.Generator().manual_seed(1))
    assert applied.all() and out.dtype == torch.float32 and out.shape == x.shape
    # Re-draw the powers the overlay drew (the first B draws of the generator) and loop.
    u = torch.rand(8, generator=torch.Generator().manual_seed(1))
    s = torch.exp(u * math.log(2))
    for i in range(8):
        torch.testing.assert_close(out[i], _reference(x[i], maps[i], s[i], 0.3, 1e-8))
    assert 0 <= out.min() and out.max() <= 1


def test_p0_changes_nothing() -> None:
    images, maps = _batch(8)
    x = images.float() / 255
    out, applied = overlay(x, maps, p=0.0)
    assert not applied.any() and torch.equal(out, x)


def test_share_of_overlaid_images_is_p() -> None:
    n, p = 20_000, 0.1
    x = torch.full((n, 3, 4, 4), 0.5)
    maps = torch.rand(n, 4, 4, generator=torch.Generator().manual_seed(2))
    out, applied = overlay(x, maps, p=p, generator=torch.Generator().manual_seed(3))
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, applied)  # exactly the reported images were blended
    # Binomial(20000, 0.1): sd = 42.4; 5 sd either side.
    assert abs(int(applied.sum()) - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_power_is_log_uniform_in_the_range() -> None:
    # A map (0, 1/2, 1, ...) keeps 0 and 1 under any power and min-max, so the pixel that held
    # 1/2 reads back 0.5 ** s: recover s and test that ln s is uniform on [ln lo, ln hi].
    n, lo, hi = 4000, 1.0, 2.0
    maps = torch.zeros(n, 4, 4)
    maps[:, 0, 1], maps[:, 0, 2] = 0.5, 1.0
    x = torch.zeros(n, 3, 4, 4)
    out, _ = overlay(x, maps, p=1.0, blend=1.0, power=(lo, hi), eps=1e-12,
                     generator=torch.Generator().manual_seed(4))  # fmt: skip
    s = torch.log(out[:, 0, 0, 1].double()) / math.log(0.5)
    assert s.min() >= lo - 1e-5 and s.max() <= hi + 1e-5
    scaled = (torch.log(s) - math.log(lo)) / (math.log(hi) - math.log(lo))
    assert stats.kstest(scaled.clamp(0, 1).numpy(), "uniform").pvalue > 1e-3


def test_min_max_reaches_zero_and_one_and_flat_maps_are_safe() -> None:
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(5)) * 5
    maps[3] = 7.0  # a flat map: max - min = 0, the epsilon keeps it finite (G = 0)
    out, _ = overlay(torch.zeros(4, 3, 32, 32), maps, p=1.0, blend=1.0)
    assert torch.isfinite(out).all()
    g = out[:, 0].flatten(1)
    torch.testing.assert_close(g[:3].min(1).values, torch.zeros(3))
    torch.testing.assert_close(g[:3].max(1).values, torch.ones(3))
    assert torch.equal(out[3], torch.zeros(3, 32, 32))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])  # 3 channels


def test_seeded_draws_are_reproducible() -> None:
    images, maps = _batch(64)
    x = images.float() / 255
    a = overlay(x, maps, p=0.5, generator=torch.Generator().manual_seed(6))
    b = overlay(x, maps, p=0.5, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_aligned_order_crops_and_flips_the_map_with_its_image() -> None:
    images, maps = _batch(32, seed=7)
    out = augment_batch(images, maps, p=1.0, generator=torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)
    cropped, cropped_maps = random_crop_flip(images, maps, generator=g)
    expected, _ = overlay(cropped.float() / 255, cropped_maps, p=1.0, generator=g)
    assert torch.equal(out, expected)


def test_published_order_overlays_the_untransformed_map() -> None:
    images, maps = _batch(32, seed=9)
    out = augment_batch(
        images, maps, p=1.0, order="published", generator=torch.Generator().manual_seed(10)
    )
    g = torch.Generator().manual_seed(10)
    cropped = random_crop_flip(images, generator=g)
    expected, _ = overlay(cropped.float() / 255, maps, p=1.0, generator=g)
    assert torch.equal(out, expected)


def test_the_map_stays_on_its_object_only_in_the_aligned_order() -> None:
    # Each image is black with one white pixel; its map is hot at that same pixel. After the
    # augmentation the brightest pixel of the view is the object and the map's peak lands on it
    # (value 0.5 * 1 + 0.5 * 1 = 1) only if the map moved with the image.
    b = 256
    g = torch.Generator().manual_seed(11)
    rows, cols = torch.randint(6, 26, (2, b), generator=g)
    images = torch.zeros(b, 3, 32, 32, dtype=torch.uint8)
    maps = torch.zeros(b, 32, 32)
    images[torch.arange(b), :, rows, cols] = 255
    maps[torch.arange(b), rows, cols] = 1.0
    for order, share in (("aligned", 1.0), ("published", None)):
        out = augment_batch(images, maps, p=1.0, order=order, generator=torch.Generator())
        peak_is_one = (out[:, 0].flatten(1).max(1).values == 1.0).float().mean().item()
        if share is not None:
            assert peak_is_one == share
        else:  # misaligned unless the crop offset is 0 and there is no flip: about 1/81 * 1/2
            assert peak_is_one < 0.1


def test_no_crop_flip_is_the_plain_overlay() -> None:
    images, maps = _batch(8, seed=12)
    out = augment_batch(images, maps, p=1.0, crop_flip=False, generator=torch.Generator())
    expected, _ = overlay(images.float() / 255, maps, p=1.0, generator=torch.Generator())
    assert torch.equal(out, expected)


def test_bad_inputs_name_the_value() -> None:
    images, maps = _batch(4)
    x = images.float() / 255
    with pytest.raises(ConfigError, match="uint8"):
        overlay(images, maps)
    with pytest.raises(ConfigError, match=r"\(4, 31, 32\)"):
        overlay(x, maps[:, :31])
    with pytest.raises(ConfigError, match="p=1.5"):
        overlay(x, maps, p=1.5)
    with pytest.raises(ConfigError, match="blend=-0.1"):
        overlay(x, maps, blend=-0.1)
    with pytest.raises(ConfigError, match=r"power=\(2.0, 1.0\)"):
        overlay(x, maps, power=(2.0, 1.0))
    with pytest.raises(ConfigError, match="negative"):
        overlay(x, maps - 1)
    with pytest.raises(ConfigError, match="order='before'"):
        augment_batch(images, maps, order="before")
