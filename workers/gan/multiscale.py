"""High-resolution GANs: progressive growing (Karras et al. 2018) and multi-scale gradients
(MSG-GAN, Karnewar & Wang 2020), sharing one pair of multi-resolution networks.

Both nets run from 4 x 4 to ``image_size`` in stride-2 blocks (DCGAN-style layers, widths
doubling towards 4 x 4 up to 8 x ngf), with a 1 x 1 toRGB (G) / fromRGB (D) at every
resolution.

- **Progressive** (``arch="progressive"``): training walks the resolutions 4, 8, ...,
  image_size in equal shares of the steps. Each new resolution fades in over the first half of
  its share: G's output is lerp(upsampled previous RGB, new RGB, alpha), and D's input path is
  lerp(fromRGB of the 2x-pooled image, new block of fromRGB, alpha). The stage is a function of
  the step (``progressive_stage``), so a resumed run is in the same stage. G always returns
  image_size x image_size (nearest-upsampled from the stage's resolution) and D average-pools
  its input down to the stage's resolution, so real images are downsampled exactly as
  ProGAN does, and the loop's image interface is unchanged.
- **MSG** (``arch="msg"``): every resolution trains at once. ``pyramid`` returns G's image at
  every resolution; D takes such a list (or builds it from a real image by average pooling)
  and concatenates each scale's image to its features at that resolution, so gradients reach
  every one of G's scales directly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from shared.jobs.gan_train import MSG_ARCH, MULTISCALE_GAN_ARCHS, PROGRESSIVE_ARCH
from workers.gan.nets import BASE_SIZE, KERNEL, LEAKY_SLOPE, PADDING, STRIDE, num_stages

MAX_WIDTH_MULT = 8
PROGRESSIVE = PROGRESSIVE_ARCH
MSG = MSG_ARCH
MULTISCALE_ARCHS = MULTISCALE_GAN_ARCHS  # (PROGRESSIVE, MSG): the params module owns the list
FADE_SHARE = 0.5  # of each stage (after the first) spent fading the new resolution in


def resolutions(image_size: int) -> list[int]:
    """4, 8, ..., image_size."""
    return [BASE_SIZE * 2**i for i in range(num_stages(image_size) + 1)]


def _width(base: int, image_size: int, resolution: int) -> int:
    return base * min(MAX_WIDTH_MULT, image_size // resolution)


@dataclass(frozen=True)
class Stage:
    """Where progressive training is: the resolution index (0: 4 x 4) and the fade-in weight."""

    level: int
    alpha: float

    def resolution(self) -> int:
        """The stage's resolution in pixels."""
        return BASE_SIZE * 2**self.level


def progressive_stage(step: int, steps: int, image_size: int) -> Stage:
    """The stage of (1-based) ``step`` of a ``steps``-step run: equal shares per resolution, fading in."""
    levels = num_stages(image_size) + 1
    share = max(1, steps // levels)
    level = min((step - 1) // share, levels - 1)
    if level == 0:
        return Stage(0, 1.0)
    into = (step - 1) - level * share
    fade = max(1, int(share * FADE_SHARE))
    return Stage(level, min(1.0, (into + 1) / fade))


class MultiScaleGenerator(nn.Module):
    """Latents (N, nz) to images (N, channels, image_size, image_size) in [-1, 1]; ``pyramid`` gives every scale."""

    def __init__(self, *, image_size: int, nz: int, ngf: int, channels: int) -> None:
        super().__init__()
        self.image_size, self.nz, self.ngf, self.channels = image_size, nz, ngf, channels
        self.num_classes = 0  # not conditional; the loop asks
        sizes = resolutions(image_size)
        widths = [_width(ngf, image_size, r) for r in sizes]
        self.head = nn.Sequential(
            nn.ConvTranspose2d(nz, widths[0], KERNEL, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(w_in, w_out, KERNEL, STRIDE, PADDING, bias=False),
                nn.BatchNorm2d(w_out),
                nn.ReLU(True),
            )
            for w_in, w_out in itertools.pairwise(widths)
        )
        self.to_rgb = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths)
        self.stage = Stage(len(sizes) - 1, 1.0)  # the full network unless a progressive run says otherwise

    def set_stage(self, stage: Stage) -> None:
        """Train or sample at ``stage`` (progressive growing)."""
        self.stage = stage

    def pyramid(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Images at 4, 8, ..., image_size (MSG-GAN's multi-scale outputs)."""
        h = self.head(z.reshape(z.shape[0], self.nz, 1, 1))
        images = [torch.tanh(self.to_rgb[0](h))]
        for block, to_rgb in zip(self.blocks, self.to_rgb[1:], strict=True):
            h = block(h)
            images.append(torch.tanh(to_rgb(h)))
        return images

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images at image_size: the stage's output (faded in, nearest-upsampled) or the full network's."""
        level, alpha = self.stage.level, self.stage.alpha
        h = self.head(z.reshape(z.shape[0], self.nz, 1, 1))
        previous = h
        for block in self.blocks[:level]:
            previous, h = h, block(h)
        image = self.to_rgb[level](h)
        if level > 0 and alpha < 1.0:
            old = F.interpolate(self.to_rgb[level - 1](previous), scale_factor=2, mode="nearest")
            # CUDA's autocast upsamples in fp32 while the convolutions give bf16: blend in the new block's dtype
            image = torch.lerp(old.to(image.dtype), image, alpha)
        image = torch.tanh(image)
        scale = self.image_size // image.shape[-1]
        return F.interpolate(image, scale_factor=scale, mode="nearest") if scale > 1 else image


class MultiScaleDiscriminator(nn.Module):
    """Images to one logit each; multi-scale inputs for MSG, the stage's resolution for progressive."""

    def __init__(self, *, image_size: int, ndf: int, channels: int, msg: bool) -> None:
        super().__init__()
        self.image_size, self.ndf, self.channels, self.msg = image_size, ndf, channels, msg
        self.num_classes = 0
        sizes = resolutions(image_size)
        widths = [_width(ndf, image_size, r) for r in sizes]  # widths[i]: features at sizes[i]
        self.from_rgb = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, w, 1), nn.LeakyReLU(LEAKY_SLOPE)) for w in widths
        )
        # blocks[i] takes sizes[i + 1] down to sizes[i]. Under MSG every block but the top one (whose
        # input is fromRGB of the full image) also sees that scale's image, as does the final conv.
        extra = channels if msg else 0
        top = len(sizes) - 2
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i + 1] + (extra if i < top else 0), widths[i], KERNEL, STRIDE, PADDING),
                nn.LeakyReLU(LEAKY_SLOPE),
            )
            for i in range(len(sizes) - 1)
        )
        self.final = nn.Conv2d(widths[0] + extra, 1, KERNEL, 1, 0)
        self.stage = Stage(len(sizes) - 1, 1.0)

    def set_stage(self, stage: Stage) -> None:
        """Judge images at ``stage``'s resolution (progressive growing)."""
        self.stage = stage

    def forward(self, x: torch.Tensor | list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per image (N,)."""
        if self.msg:
            return self._msg(x)
        if isinstance(x, list):
            raise TypeError("a progressive discriminator takes one image tensor")
        level, alpha = self.stage.level, self.stage.alpha
        factor = self.image_size // (BASE_SIZE * 2**level)
        x = F.avg_pool2d(x, factor) if factor > 1 else x
        h = self.from_rgb[level](x)
        if level > 0:
            h = self.blocks[level - 1](h)
            if alpha < 1.0:
                h = torch.lerp(self.from_rgb[level - 1](F.avg_pool2d(x, 2)).to(h.dtype), h, alpha)
        for block in reversed(self.blocks[: max(level - 1, 0)]):
            h = block(h)
        return self.final(h).reshape(-1)

    def _msg(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        scales = x if isinstance(x, list) else self._pool_pyramid(x)
        h = self.from_rgb[-1](scales[-1])
        for i in reversed(range(len(self.blocks))):
            h = self.blocks[i](h if i == len(self.blocks) - 1 else torch.cat([h, scales[i + 1]], dim=1))
        return self.final(torch.cat([h, scales[0]], dim=1)).reshape(-1)

    def _pool_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        scales = [x]
        while scales[0].shape[-1] > BASE_SIZE:
            scales.insert(0, F.avg_pool2d(scales[0], 2))
        return scales
