"""Batched crop + flip: shapes, dtypes, zero padding, flip rate, the joint transform of IG maps."""

from __future__ import annotations

import pytest
import torch

from igkd.augment import random_crop_flip
from igkd.errors import ConfigError


def _images(b: int = 64, seed: int = 0) -> torch.Tensor:
    # Values 1..255 so that any 0 in the output can only come from the padding.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_shape_dtype_device_preserved(dtype: torch.dtype) -> None:
    x = _images(8).to(dtype)
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, torch.Tensor)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


def test_returns_tuple_with_extras() -> None:
    x = _images(4)
    maps3, maps4 = torch.rand(4, 32, 32), torch.rand(4, 2, 32, 32)
    out = random_crop_flip(x, maps3, maps4)
    assert isinstance(out, tuple) and len(out) == 3
    assert [t.shape for t in out] == [x.shape, maps3.shape, maps4.shape]
    assert [t.dtype for t in out] == [torch.uint8, torch.float32, torch.float32]


def test_extra_gets_the_same_crop_and_flip() -> None:
    x = _images(64)
    g = torch.Generator().manual_seed(1)
    out, copy, channel0, channel0_4d = random_crop_flip(
        x, x.clone(), x[:, 0].float(), x[:, :1].double(), generator=g
    )
    assert torch.equal(out, copy)
    assert torch.equal(out[:, 0].float(), channel0)
    assert torch.equal(out[:, :1].double(), channel0_4d)


def test_output_is_an_integer_shift_of_the_input_with_zero_padding() -> None:
    # Every output must be exactly a crop of the zero-padded image, optionally mirrored.
    x = _images(32)
    out = random_crop_flip(x, padding=4, generator=torch.Generator().manual_seed(2))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        candidates = [
            padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)
        ]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in candidates)


def test_padding_region_is_zero() -> None:
    # With padding 4 and offsets in 0..8, a shift of k rows down leaves k zero rows on top, etc.
    x = _images(256)
    out = random_crop_flip(x, padding=4, flip=False, generator=torch.Generator().manual_seed(3))
    zero_rows = (out == 0).all(dim=(1, 3))  # (B, H): rows that are entirely zero
    zero_cols = (out == 0).all(dim=(1, 2))
    assert (out != 0).any(dim=(1, 2, 3)).all()
    # Zero rows/columns only at the borders, and at most `padding` of them on a side.
    assert zero_rows[:, 4:28].sum() == 0 and zero_cols[:, 4:28].sum() == 0
    assert zero_rows.any() and zero_cols.any()
    # Every zero pixel lies in a zero row or column (the images themselves hold no zeros).
    in_pad = zero_rows[:, None, :, None] | zero_cols[:, None, None, :]
    assert torch.equal(out == 0, in_pad.expand_as(out))


def test_no_padding_no_flip_is_identity() -> None:
    x = _images(8)
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)


def test_flip_rate_is_one_half() -> None:
    # padding=0 isolates the flip: each image is either unchanged or mirrored.
    n = 2000
    x = _images(n)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(4))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    unchanged = (out == x).all(dim=(1, 2, 3))
    assert (flipped ^ unchanged).all()
    # Binomial(2000, 0.5): sd = 22.4; 5 sd either side.
    assert abs(int(flipped.sum()) - n / 2) < 5 * (n * 0.25) ** 0.5


def test_offsets_cover_the_full_range() -> None:
    # A single bright pixel at (16, 16) must land on every shift -4..4 in each direction.
    x = torch.zeros(4000, 1, 32, 32)
    x[:, :, 16, 16] = 1
    out = random_crop_flip(x, padding=4, flip=False, generator=torch.Generator().manual_seed(5))
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 32, pos % 32
    assert set(rows.tolist()) == set(range(12, 21)) and set(cols.tolist()) == set(range(12, 21))


def test_seeded_generator_is_deterministic() -> None:
    x = _images(16)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
            ],
        ),
    ],
)
def test_images_and_maps_stay_on_their_device_and_aligned(device: str) -> None:
    x = _images(16).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    out, m = random_crop_flip(x, x[:, 0].float(), generator=g)
    assert out.device.type == device and m.device.type == device
    assert torch.equal(out[:, 0].float(), m)  # the map got its image's crop and flip


def test_bad_inputs_name_the_value() -> None:
    x = _images(4)
    with pytest.raises(ConfigError, match=r"\(4, 32, 31\)"):
        random_crop_flip(x, torch.zeros(4, 32, 31))
    with pytest.raises(ConfigError, match="padding=-1"):
        random_crop_flip(x, padding=-1)
    with pytest.raises(ConfigError, match=r"\(3, 32, 32\)"):
        random_crop_flip(x[0])
