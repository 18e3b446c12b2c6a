"""GAN networks: DCGAN in the pytorch/examples dcgan style, sized by image_size, and the lesson's dense GAN.

Both DCGAN nets are stacks of stride-2 stages between a 4 x 4 base map and the image, so the
number of stages follows from ``image_size``: 16 -> 2, 32 -> 3, 64 -> 4, 128 -> 5. Widths
double towards the 4 x 4 end, as in the 64 x 64 reference (``ngf*8`` at 4 x 4).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from shared.jobs.params import GAN_IMAGE_SIZES

SUPPORTED_SIZES: tuple[int, ...] = GAN_IMAGE_SIZES  # the params module owns the list
BASE_SIZE = 4  # the generator starts from, and the discriminator ends at, a 4 x 4 map
KERNEL = 4
STRIDE = 2
PADDING = 1
LEAKY_SLOPE = 0.2
CONV_INIT_MEAN = 0.0
BN_INIT_MEAN = 1.0
INIT_STD = 0.02
MLP_G_MULTS = (4, 8, 16)  # x ngf: 256-512-1024 at ngf 64, as in the lesson
MLP_D_MULTS = (8, 4)  # x ndf: 512-256 at ndf 64
MLP_BN_MOMENTUM = 0.2  # Keras' BatchNormalization(momentum=0.8) in PyTorch's convention


def num_stages(image_size: int) -> int:
    """Stride-2 stages between the 4 x 4 base map and an ``image_size`` x ``image_size`` image."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {list(SUPPORTED_SIZES)}, got {image_size}")
    return (image_size // BASE_SIZE).bit_length() - 1


class Generator(nn.Module):
    """Maps latents (N, nz) or (N, nz, 1, 1) to images (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, *, image_size: int, nz: int, ngf: int, channels: int, num_classes: int = 0) -> None:
        super().__init__()
        self.image_size = image_size
        self.nz = nz
        self.ngf = ngf
        self.channels = channels
        self.num_classes = num_classes  # > 0: conditional, the one-hot class joins the latent
        mult = 2 ** (num_stages(image_size) - 1)
        layers: list[nn.Module] = [
            # input is Z (and the one-hot class), going into a convolution
            nn.ConvTranspose2d(nz + num_classes, ngf * mult, KERNEL, 1, 0, bias=False),
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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate one image per latent (of class ``labels[i]`` when conditional)."""
        z = z.reshape(z.shape[0], self.nz, 1, 1)
        if self.num_classes:
            z = torch.cat([z, _one_hot(labels, self.num_classes, z).view(z.shape[0], self.num_classes, 1, 1)], dim=1)
        return self.main(z)


def _one_hot(labels: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """(N, num_classes) one-hot rows in ``like``'s dtype and device."""
    if labels is None:
        raise ValueError(f"this network is conditional on {num_classes} classes: pass labels")
    return F.one_hot(labels.to(like.device, torch.int64), num_classes).to(like.dtype)


class Discriminator(nn.Module):
    """Maps images (N, channels, image_size, image_size) to one real/fake logit each, shape (N,)."""

    def __init__(
        self,
        *,
        image_size: int,
        ndf: int,
        channels: int,
        batchnorm: bool = True,
        num_classes: int = 0,
        pack: int = 1,
        minibatch_std: int = 0,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.ndf = ndf
        self.channels = channels
        self.num_classes = num_classes  # > 0: conditional, one constant map per class joins the image
        self.pack = pack  # > 1: PacGAN, one logit per ``pack`` images stacked along the channels
        stages = num_stages(image_size)
        layers: list[nn.Module] = [
            # input is (pack * channels + num_classes) x image_size x image_size
            nn.Conv2d(pack * channels + num_classes, ndf, KERNEL, STRIDE, PADDING, bias=False),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # (ndf) x image_size/2 x image_size/2
        ]
        mult = 1
        for _ in range(stages - 1):
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, KERNEL, STRIDE, PADDING, bias=False),
                nn.BatchNorm2d(ndf * mult * 2) if batchnorm else nn.Identity(),
                nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            ]
            mult *= 2
            # (ndf*mult) x h/2 x w/2, halving the previous h x w
        if minibatch_std:  # one more constant map: how varied the group of samples is
            layers.append(MinibatchStd(minibatch_std))
        layers += [
            nn.Conv2d(ndf * mult + (1 if minibatch_std else 0), 1, KERNEL, 1, 0, bias=False),
            # 1 x 1 x 1: a logit; no Sigmoid, the loop uses BCEWithLogitsLoss
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per image (judged as an image of class ``labels[i]`` when conditional), or per pack of images."""
        x = packed(x, self.pack)
        if self.num_classes:
            maps = _one_hot(labels, self.num_classes, x)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, maps], dim=1)
        return self.main(x).reshape(-1)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation layer (Karras et al. 2018), as StyleGAN writes it: the standard
    deviation of every feature over a group of ``group`` samples (samples i, i + N/group, ...), averaged into
    one number per group, joins the features as one more constant map. D then sees how varied the batch is,
    so a generator that repeats itself, or keeps to a few classes, is easy to tell from real data."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _c, h, w = x.shape
        group = min(self.group, n)
        if n % group:
            raise ValueError(f"a batch of {n} samples does not split into minibatch_std groups of {group}")
        y = x.float().reshape(group, n // group, *x.shape[1:])
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (N / group, C, H, W)
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(group, 1, h, w)  # (N, 1, H, W), in group order
        return torch.cat([x, y.to(x.dtype)], dim=1)


class MLPGenerator(nn.Module):
    """The lesson's dense generator: latents (N, nz) -> Linear 4-8-16 x ngf (LeakyReLU, BN) -> ``out_shape``.

    ``batchnorm=False`` leaves out the batch norms: each sample then depends on its latent alone,
    not on the batch's statistics. On ring8 that puts more samples on the modes; alone it collapsed
    one seed in five, which a packed D (PacGAN) prevents (docs/benchmarks.md).
    """

    def __init__(self, *, nz: int, ngf: int, out_shape: tuple[int, ...], tanh: bool, batchnorm: bool = True) -> None:
        super().__init__()
        self.nz = nz
        self.ngf = ngf
        self.out_shape = out_shape
        self.tanh = tanh
        self.batchnorm = batchnorm
        widths = [nz, *(ngf * m for m in MLP_G_MULTS)]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [
                nn.Linear(width_in, width_out),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.BatchNorm1d(width_out, momentum=MLP_BN_MOMENTUM) if batchnorm else nn.Identity(),
            ]
            # width_out
        layers.append(nn.Linear(widths[-1], math.prod(out_shape)))
        # prod(out_shape); Tanh for images in [-1, 1], linear for points
        if tanh:
            layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One sample of shape ``out_shape`` per latent (the dense GAN is never conditional: labels unused)."""
        return self.main(z.reshape(z.shape[0], self.nz)).reshape(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """The lesson's dense discriminator: flattened input -> Linear 8-4 x ndf (LeakyReLU) -> one logit, shape (N,).

    ``pack`` > 1 is PacGAN (Lin et al. 2018): D judges ``pack`` samples at once, concatenated, and
    gives one logit per pack (shape (N / pack,)), so a generator that repeats itself is easy to spot.
    """

    def __init__(self, *, ndf: int, in_shape: tuple[int, ...], pack: int = 1) -> None:
        super().__init__()
        self.ndf = ndf
        self.in_shape = in_shape
        self.pack = pack
        widths = [pack * math.prod(in_shape), *(ndf * m for m in MLP_D_MULTS)]
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.LeakyReLU(LEAKY_SLOPE)]
            # width_out
        layers.append(nn.Linear(widths[-1], 1))
        # 1: a logit; no Sigmoid, the losses work on logits
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One logit per sample, or per pack (labels unused: the dense GAN is never conditional)."""
        return self.main(packed(x, self.pack)).reshape(-1)


def packed(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN's packing: (N, C, ...) -> (N / pack, pack * C, ...), consecutive samples side by side."""
    if pack == 1:
        return x
    if x.shape[0] % pack:
        raise ValueError(f"a batch of {x.shape[0]} samples does not split into packs of {pack}")
    return x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


def add_spectral_norm(net: nn.Module, *, generator: torch.Generator) -> None:
    """Spectral-normalise every conv and linear layer of ``net``; power-iteration vectors drawn from ``generator``."""
    targets = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for _, module in targets:
        # spectral_norm draws its starting vectors from the global RNG: fork it so runs stay seeded
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            spectral_norm(module)


def weights_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN init: conv weights ~ N(0, 0.02); batch-norm weights ~ N(1, 0.02) and biases 0; dense layers as Keras."""
    if isinstance(module, nn.Linear):
        # Keras' Dense default, as in the lesson's notebook: Glorot-uniform weights, zero biases
        nn.init.xavier_uniform_(module.weight, generator=generator)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, CONV_INIT_MEAN, INIT_STD, generator=generator)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, BN_INIT_MEAN, INIT_STD, generator=generator)
        nn.init.zeros_(module.bias)
