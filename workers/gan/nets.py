"""DCGAN generator and discriminator in the pytorch/examples dcgan style, sized by image_size.

Both nets are stacks of stride-2 stages between a 4 x 4 base map and the image, so the
number of stages follows from ``image_size``: 16 -> 2, 32 -> 3, 64 -> 4, 128 -> 5. Widths
double towards the 4 x 4 end, as in the 64 x 64 reference (``ngf*8`` at 4 x 4).
"""

from __future__ import annotations

import torch
from torch import nn

SUPPORTED_SIZES: tuple[int, ...] = (16, 32, 64, 128)
BASE_SIZE = 4  # the generator starts from, and the discriminator ends at, a 4 x 4 map
KERNEL = 4
STRIDE = 2
PADDING = 1
LEAKY_SLOPE = 0.2
CONV_INIT_MEAN = 0.0
BN_INIT_MEAN = 1.0
INIT_STD = 0.02


def num_stages(image_size: int) -> int:
    """Stride-2 stages between the 4 x 4 base map and an ``image_size`` x ``image_size`` image."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {list(SUPPORTED_SIZES)}, got {image_size}")
    return (image_size // BASE_SIZE).bit_length() - 1


class Generator(nn.Module):
    """Maps latents (N, nz) or (N, nz, 1, 1) to images (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, *, image_size: int, nz: int, ngf: int, channels: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.nz = nz
        self.ngf = ngf
        self.channels = channels
        mult = 2 ** (num_stages(image_size) - 1)
        layers: list[nn.Module] = [
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * mult, KERNEL, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
            # (ngf*mult) x 4 x 4
        ]
        while mult > 1:
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, KERNEL, STRIDE, PADDING, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]
            mult //= 2
            # (ngf*mult) x 2h x 2w, doubling the previous h x w
        layers += [
            nn.ConvTranspose2d(ngf, channels, KERNEL, STRIDE, PADDING, bias=False),
            nn.Tanh(),
            # (channels) x image_size x image_size
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate one image per latent."""
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """Maps images (N, channels, image_size, image_size) to one real/fake logit each, shape (N,)."""

    def __init__(self, *, image_size: int, ndf: int, channels: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.ndf = ndf
        self.channels = channels
        stages = num_stages(image_size)
        layers: list[nn.Module] = [
            # input is (channels) x image_size x image_size
            nn.Conv2d(channels, ndf, KERNEL, STRIDE, PADDING, bias=False),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # (ndf) x image_size/2 x image_size/2
        ]
        mult = 1
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, KERNEL, STRIDE, PADDING, bias=False),
                nn.BatchNorm2d(ndf * mult * 2),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
            mult *= 2
            # (ndf*mult) x h/2 x w/2, halving the previous h x w
        layers += [
            nn.Conv2d(ndf * mult, 1, KERNEL, 1, 0, bias=False),
            # 1 x 1 x 1: a logit; no Sigmoid, the loop uses BCEWithLogitsLoss
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image."""
        return self.main(x).reshape(-1)


def weights_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN init: conv weights ~ N(0, 0.02); batch-norm weights ~ N(1, 0.02) and biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, CONV_INIT_MEAN, INIT_STD, generator=generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, BN_INIT_MEAN, INIT_STD, generator=generator)
        nn.init.zeros_(module.bias)
