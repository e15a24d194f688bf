"""Batched augmentation of in-memory image tensors, applied jointly to images and their IG maps.

The paper's pipeline crops and flips each image but not the IG map overlaid on it (paper.md §3), so
the map no longer lines up with the image. Here every extra tensor (IG maps, masks) gets exactly the
crop offsets and flips of its image. Each tensor takes one gather: no PIL, no per-sample loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from igkd.errors import ConfigError


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
