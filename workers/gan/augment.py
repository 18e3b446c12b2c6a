"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every D input, real and fake.

A port of the authors' PyTorch reference, with every random draw taken from a
``torch.Generator`` so that runs stay seeded and resumable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the image side
CUTOUT_RATIO = 0.5  # erase a square of half the image side
COLOR_CENTRE = 0.5
SATURATION_SCALE = 2.0
CONTRAST_OFFSET = 0.5
BORDER = 1  # one pixel of zero padding that translations pull in


def _per_sample(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def rand_brightness(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Add a per-sample offset in [-0.5, 0.5)."""
    return x + (_per_sample(x, generator) - COLOR_CENTRE)


def rand_saturation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scale the distance to the per-pixel channel mean by a factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_per_sample(x, generator) * SATURATION_SCALE) + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scale the distance to the per-sample mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_per_sample(x, generator) + CONTRAST_OFFSET) + mean


def _grids(n: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, rows, cols = torch.meshgrid(
        torch.arange(n, device=device), torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return batch, rows, cols


def rand_translation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each sample by up to 1/8 of its size, filling with zeros."""
    n, _, h, w = x.shape
    shift_h, shift_w = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-shift_h, shift_h + 1, (n, 1, 1), generator=generator, device=x.device)
    dx = torch.randint(-shift_w, shift_w + 1, (n, 1, 1), generator=generator, device=x.device)
    batch, rows, cols = _grids(n, h, w, x.device)
    rows = torch.clamp(rows + dy + BORDER, 0, h + 2 * BORDER - 1)
    cols = torch.clamp(cols + dx + BORDER, 0, w + 2 * BORDER - 1)
    padded = F.pad(x, [BORDER, BORDER, BORDER, BORDER])
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def rand_cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Zero a square of half the image side at a random place in each sample."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    top = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), generator=generator, device=x.device)
    left = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), generator=generator, device=x.device)
    batch, rows, cols = _grids(n, size_h, size_w, x.device)
    rows = torch.clamp(rows + top - size_h // 2, 0, h - 1)
    cols = torch.clamp(cols + left - size_w // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[batch, rows, cols] = 0
    return x * mask.unsqueeze(1)


Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
POLICIES: dict[str, tuple[Augmentation, ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: torch.Tensor, policies: Sequence[str], *, generator: torch.Generator) -> torch.Tensor:
    """Apply the named policies in order (color, translation, cutout); gradients flow through to ``x``."""
    for policy in policies:
        if policy not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {policy!r}: use {sorted(POLICIES)}")
        for fn in POLICIES[policy]:
            x = fn(x, generator)
    return x
