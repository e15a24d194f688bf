"""Batched augmentation of in-memory image tensors, applied jointly to images and their IG maps.

The paper's pipeline crops and flips each image but not the IG map overlaid on it (paper.md §3), so
the map no longer lines up with the image. Here every extra tensor (IG maps, masks) gets exactly the
crop offsets and flips of its image. Each tensor takes one gather: no PIL, no per-sample loop.
`overlay` is the paper's IG overlay and `augment_batch` the whole student view (crop, flip,
overlay) in either order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from igkd.errors import ConfigError

OVERLAY_ORDERS = ("aligned", "published")


def random_crop_flip(
    images: torch.Tensor,
    *extra: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """torchvision's RandomCrop(H, padding) + RandomHorizontalFlip(0.5), per image, on a batch.

    `images` (B, C, H, W) of any dtype; each of `extra` is (B, C', H, W) or (B, H, W) and is cropped
    and flipped like its image. Padding is zeros; shifts are whole pixels (no interpolation). Random
    draws, in order: row offsets (B,), column offsets (B,), flips (B,), all from `generator`, which
    must be on the images' device. Returns the images alone, or (images, *extra), each with its
    input's shape, dtype and device.
    """
    if images.dim() != 4:
        raise ConfigError(f"images have shape {tuple(images.shape)}; expected (B, C, H, W)")
    if padding < 0:
        raise ConfigError(f"padding={padding}; expected an integer >= 0")
    b, _, h, w = images.shape
    for i, t in enumerate(extra):
        if t.dim() not in (3, 4) or (t.shape[0], *t.shape[-2:]) != (b, h, w):
            raise ConfigError(
                f"extra tensor {i} has shape {tuple(t.shape)}; expected ({b}, C, {h}, {w}) "
                f"or ({b}, {h}, {w}) to match the images"
            )
    device = images.device
    if generator is not None and generator.device.type != device.type:
        raise ConfigError(
            f"generator is on {generator.device} but the images are on {device}; "
            f"use torch.Generator(device={str(device)!r})"
        )

    # Crop offsets in the padded frame, 0..2*padding inclusive, as torchvision draws them.
    dy = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=device, generator=generator)
    flips = torch.rand(b, device=device, generator=generator) < 0.5
    if not flip:
        flips.zero_()  # still drawn above, so the crops do not depend on `flip`

    # Source pixel (row, col) of every output pixel in the padded image, flattened to one index
    # per output pixel: a horizontal flip just reverses the column order.
    wp = w + 2 * padding
    rows = dy[:, None] + torch.arange(h, device=device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w)  # (B, 1, H*W)

    def apply(t: torch.Tensor) -> torch.Tensor:
        x = t if t.dim() == 4 else t.unsqueeze(1)
        # Zero padding via F.pad keeps the dtype (uint8 included); gather copies exact values.
        padded = F.pad(x, (padding, padding, padding, padding)).flatten(2)  # (B, C, Hp*Wp)
        out = padded.gather(2, index.expand(b, x.shape[1], h * w)).view(x.shape)
        return out if t.dim() == 4 else out.squeeze(1)

    if not extra:
        return apply(images)
    return (apply(images), *(apply(t) for t in extra))


def overlay(
    images: torch.Tensor,
    maps: torch.Tensor,
    p: float = 0.1,
    blend: float = 0.5,
    power: tuple[float, float] = (1.0, 2.0),
    eps: float = 1e-8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's IG overlay (paper.md §3) on a batch; returns (images, applied mask (B,) bool).

    `images` float (B, 3, H, W) in [0, 1]; `maps` (B, H, W), non-negative (e.g. sum over RGB of
    |IG|). Per image: a power s = exp(U(ln lo, ln hi)) (log-uniform in `power`), G = M**s
    min-max normalised to [0, 1] (divided by max - min + `eps`, so a flat map gives G = 0), copied
    to the 3 channels; with probability `p` the image becomes (1 - blend) * image + blend * G
    (blend 0.5 is the paper's 0.5 x + 0.5 G), otherwise it is returned unchanged. The output stays
    in [0, 1]. Random draws, in order: s (B,), then the overlay decisions (B,), from `generator`.
    """
    if not images.is_floating_point() or images.dim() != 4:
        raise ConfigError(
            f"images are {images.dtype} of shape {tuple(images.shape)}; expected float "
            "(B, C, H, W) in [0, 1] (convert uint8 with igkd.data.to_float)"
        )
    b, _, h, w = images.shape
    if tuple(maps.shape) != (b, h, w):
        raise ConfigError(
            f"maps have shape {tuple(maps.shape)}; expected ({b}, {h}, {w}) to match the images"
        )
    if not 0 <= p <= 1:
        raise ConfigError(f"p={p!r}; the overlay probability must be in [0, 1]")
    if not 0 <= blend <= 1:
        raise ConfigError(f"blend={blend!r}; the blend weight must be in [0, 1]")
    lo, hi = power
    if not 0 < lo <= hi:
        raise ConfigError(f"power={power!r}; expected (lo, hi) with 0 < lo <= hi")
    if eps <= 0:
        raise ConfigError(f"eps={eps!r}; expected a small positive number such as 1e-8")
    maps = maps.to(images.dtype)
    if bool((maps < 0).any()):
        # A negative value to a non-integer power is NaN: signed IG must be reduced first.
        raise ConfigError(
            f"maps hold negative values (min {maps.min().item():.4g}); pass non-negative maps "
            "such as igkd.attribution.ig_map(attributions)"
        )
    device = images.device
    if generator is not None and generator.device.type != device.type:
        raise ConfigError(
            f"generator is on {generator.device} but the images are on {device}; "
            f"use torch.Generator(device={str(device)!r})"
        )

    u = torch.rand(b, device=device, generator=generator, dtype=images.dtype)
    s = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    applied = torch.rand(b, device=device, generator=generator) < p
    m = maps.pow(s.view(b, 1, 1)).flatten(1)
    m_min = m.amin(1, keepdim=True)
    g = ((m - m_min) / (m.amax(1, keepdim=True) - m_min + eps)).view(b, 1, h, w)
    blended = torch.lerp(images, g.expand_as(images), blend)  # (1 - blend) * x + blend * G
    return torch.where(applied.view(b, 1, 1, 1), blended, images), applied


def augment_batch(
    images: torch.Tensor,
    maps: torch.Tensor,
    *,
    p: float = 0.1,
    order: str = "aligned",
    crop_flip: bool = True,
    blend: float = 0.5,
    power: tuple[float, float] = (1.0, 2.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A student's training view: random crop (pad 4) and flip, and the IG overlay; float [0, 1].

    `images` uint8 (B, 3, H, W) (or float in [0, 1]); `maps` (B, H, W) non-negative, the IG maps of the un-augmented
    images. `order="aligned"` (the fix, default) crops and flips each map with its image, then
    overlays, so the map lies on the pixels it explains; min-max runs over the view, where the
    padding counts as zero attribution. `order="published"` reproduces the released code: the
    image is cropped and flipped, then the untransformed map is overlaid. Both orders draw the
    same crops, flips, powers and overlay decisions from the same `generator` state, so they
    differ only in the map's alignment. `crop_flip=False` skips the geometric augmentation.
    """
    if order not in OVERLAY_ORDERS:
        raise ConfigError(f"order={order!r}; use one of {OVERLAY_ORDERS}")
    if crop_flip and order == "aligned":
        images, maps = random_crop_flip(images, maps, generator=generator)
    elif crop_flip:
        images = random_crop_flip(images, generator=generator)
    # uint8 -> [0, 1] here rather than via igkd.data, which sits above this module.
    x = images.float().div_(255) if images.dtype == torch.uint8 else images
    out, _ = overlay(x, maps, p, blend, power, generator=generator)
    return out
