"""Content pictures for style.train: random square crops per step, a pure function of (seed, step).

A ``ContentSet`` keeps its pictures as RGB PIL images and, per crop size, a uint8 copy whose shorter
side is ``CACHE_SCALE`` x the crop size (decoded and resized once, so a step only crops, resizes and
flips a few small tensors). Each crop covers a random fraction (``CROP_FRACTION``) of the cached
picture's shorter side at a random position, is resized to the crop size and flipped left-right
with probability 1/2. Every draw comes from a private ``torch.Generator`` seeded from (seed, step),
so a resumed run sees exactly the batches of an uninterrupted one without checkpointing any
data-order state, and the global RNG is left alone.

``builtin_content`` works offline: the bundled scikit-image / scikit-learn pictures except the
held-out ``PREVIEW_IMAGES`` (kept for ``preview_pictures``, the fixed previews and evaluation), plus
mosaics of workers/gan/data's procedural shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image

from shared.jobs.params import BUILTIN_IMAGES
from workers.gan.data import SHAPES, load_builtin
from workers.style.images import RESAMPLE, RGB_MAX, load_builtin_image

# Held out of builtin_content: the previews every style.train job shows, and the evaluation pictures.
PREVIEW_IMAGES: Final = ("astronaut", "chelsea")
TRAIN_IMAGES: Final = tuple(name for name in BUILTIN_IMAGES if name not in PREVIEW_IMAGES)
CACHE_SCALE: Final = 2  # cached shorter side = CACHE_SCALE x crop size: crops are downscaled, never blurred up
CROP_FRACTION: Final = (0.5, 1.0)  # of the cached shorter side: 1x to 2x downscaling at CACHE_SCALE 2
FLIP_PROBABILITY: Final = 0.5
CROP_MODE: Final = "bilinear"
# Procedural pictures: 2 x 2 mosaics of workers/gan/data's shapes (a bright shape on a dark ground each).
SHAPE_TILE: Final = 64  # px per shape, as generated
SHAPE_GRID: Final = 2
SHAPE_MOSAICS: Final = 6
RGB: Final = "RGB"


class ContentSet:
    """RGB content pictures and the seeded random crops a training step draws from them."""

    def __init__(self, pictures: Sequence[Image.Image]) -> None:
        if not pictures:
            raise ValueError("a content set needs at least one picture")
        self.pictures: tuple[Image.Image, ...] = tuple(p.convert(RGB) for p in pictures)
        self._cache: dict[int, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        """The number of pictures."""
        return len(self.pictures)

    def cached(self, size: int) -> list[torch.Tensor]:
        """The pictures as uint8 (3, H, W) tensors with shorter side CACHE_SCALE * size; do not modify."""
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if size not in self._cache:
            self._cache[size] = [_resized(p, shorter=CACHE_SCALE * size) for p in self.pictures]
        return self._cache[size]

    def batch(self, step: int, *, batch_size: int, size: int, seed: int) -> torch.Tensor:
        """The crops of ``step``: (batch_size, 3, size, size) float32 in [0, 1], a pure function of (seed, step)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        pictures = self.cached(size)
        generator = step_generator(seed=seed, step=step)
        crops = []
        for _ in range(batch_size):
            picture = pictures[int(torch.randint(len(pictures), (), generator=generator))]
            _, height, width = picture.shape
            low, high = (round(f * min(height, width)) for f in CROP_FRACTION)
            side = int(torch.randint(max(low, 1), max(high, 1) + 1, (), generator=generator))
            top = int(torch.randint(height - side + 1, (), generator=generator))
            left = int(torch.randint(width - side + 1, (), generator=generator))
            flip = bool(torch.rand((), generator=generator) < FLIP_PROBABILITY)
            crop = picture[:, top : top + side, left : left + side].unsqueeze(0).float() / RGB_MAX  # 1 x 3 x s x s
            if side != size:
                crop = F.interpolate(crop, size=(size, size), mode=CROP_MODE, align_corners=False, antialias=True)
            crops.append(crop.flip(-1) if flip else crop)
        return torch.cat(crops).clamp_(0.0, 1.0)  # B x 3 x size x size


def step_generator(*, seed: int, step: int) -> torch.Generator:
    """A private generator for (seed, step): well mixed, so nearby seeds and steps draw unrelated crops."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def builtin_content() -> ContentSet:
    """The offline content set: the built-in pictures except PREVIEW_IMAGES, and shapes mosaics."""
    pictures = [load_builtin_image(name) for name in TRAIN_IMAGES]
    return ContentSet(pictures + shape_mosaics())


def content_from_images(images: list[Image.Image]) -> ContentSet:
    """A content set of uploaded photos; ValueError when there are none."""
    if not images:
        raise ValueError("the content upload holds no pictures: a style.train content set needs at least one photo")
    return ContentSet(images)


def preview_pictures(size: int) -> torch.Tensor:
    """The held-out PREVIEW_IMAGES as (N, 3, size, size) in [0, 1]: centre squares, never trained on."""
    squares = [_resized(load_builtin_image(name), shorter=size) for name in PREVIEW_IMAGES]
    return torch.stack([_centre_square(s, size) for s in squares]).float() / RGB_MAX  # N x 3 x size x size


def shape_mosaics() -> list[Image.Image]:
    """SHAPE_MOSAICS pictures of SHAPE_GRID x SHAPE_GRID procedural shapes each (workers/gan/data)."""
    tiles = load_builtin(SHAPES, image_size=SHAPE_TILE, channels=3)  # N x 3 x 64 x 64 in [-1, 1]
    per_mosaic = SHAPE_GRID * SHAPE_GRID
    mosaics = []
    for index in range(SHAPE_MOSAICS):
        group = tiles[index * per_mosaic : (index + 1) * per_mosaic]  # 4 x 3 x 64 x 64
        rows = [torch.cat(list(group[r * SHAPE_GRID : (r + 1) * SHAPE_GRID]), dim=2) for r in range(SHAPE_GRID)]
        mosaic = torch.cat(rows, dim=1)  # 3 x 128 x 128
        pixels = ((mosaic + 1.0) / 2.0 * RGB_MAX).round().clamp(0, RGB_MAX).to(torch.uint8)
        mosaics.append(Image.fromarray(pixels.permute(1, 2, 0).numpy()))
    return mosaics


def _resized(picture: Image.Image, *, shorter: int) -> torch.Tensor:
    """``picture`` resized so its shorter side is ``shorter``, as uint8 (3, H, W)."""
    width, height = picture.size
    scale = shorter / min(width, height)
    target = (max(shorter, round(width * scale)), max(shorter, round(height * scale)))
    if target != picture.size:
        picture = picture.resize(target, RESAMPLE)
    return torch.from_numpy(np.array(picture, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # 3 x H x W


def _centre_square(picture: torch.Tensor, size: int) -> torch.Tensor:
    """The centre size x size square of a (3, H, W) picture whose shorter side is ``size``."""
    _, height, width = picture.shape
    top, left = (height - size) // 2, (width - size) // 2
    return picture[:, top : top + size, left : left + size]
