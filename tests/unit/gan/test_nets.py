"""DCGAN nets: shapes for every supported size, depth derived from the size, and the DCGAN init."""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import pytest
import torch
from torch import nn

from workers.gan.nets import (
    BN_INIT_MEAN,
    INIT_STD,
    SUPPORTED_SIZES,
    Discriminator,
    Generator,
    MLPDiscriminator,
    MLPGenerator,
    num_stages,
    weights_init,
)

BATCH = 3
NZ = 8
WIDTH = 4
BATCH_SIZES = (4, 5, 16, 64)  # the same four points inside batches that may take other kernel paths
ROUNDING_ATOL = 1e-5  # float32 rounding of a 3-layer MLP's outputs (about 1e-7 x a few) leaves room
SIGNAL_OVER_ROUNDING = 100
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _layers(net: nn.Module, kind: type[ModuleT]) -> list[ModuleT]:
    return [m for m in net.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("size", SUPPORTED_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_makes_images_of_the_requested_size(size: int, channels: int) -> None:
    # Given a generator for this size
    net = Generator(image_size=size, nz=NZ, ngf=WIDTH, channels=channels)
    # When it maps flat and 4-D latents
    flat = net(torch.randn(BATCH, NZ))
    spatial = net(torch.randn(BATCH, NZ, 1, 1))
    # Then both give images in [-1, 1] with one stride-2 stage per doubling above 4 x 4
    assert flat.shape == spatial.shape == (BATCH, channels, size, size)
    assert flat.abs().max() <= 1.0
    assert len(_layers(net, nn.ConvTranspose2d)) == num_stages(size) + 1


@pytest.mark.parametrize("size", SUPPORTED_SIZES)
def test_discriminator_gives_one_logit_per_image(size: int) -> None:
    net = Discriminator(image_size=size, ndf=WIDTH, channels=3)
    logits = net(torch.rand(BATCH, 3, size, size) * 2 - 1)
    assert logits.shape == (BATCH,)
    assert not isinstance(list(net.main)[-1], nn.Sigmoid)  # logits, for BCEWithLogitsLoss
    assert len(_layers(net, nn.Conv2d)) == num_stages(size) + 1


def test_64_pixel_nets_match_the_reference_dcgan_widths() -> None:
    ngf = ndf = 64
    g_convs = _layers(Generator(image_size=64, nz=100, ngf=ngf, channels=3), nn.ConvTranspose2d)
    d_convs = _layers(Discriminator(image_size=64, ndf=ndf, channels=3), nn.Conv2d)
    assert [c.out_channels for c in g_convs] == [ngf * 8, ngf * 4, ngf * 2, ngf, 3]
    assert [c.out_channels for c in d_convs] == [ndf, ndf * 2, ndf * 4, ndf * 8, 1]


@pytest.mark.parametrize("size", [8, 48, 256])
def test_unsupported_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="image_size"):
        Generator(image_size=size, nz=NZ, ngf=WIDTH, channels=1)
    with pytest.raises(ValueError, match="image_size"):
        Discriminator(image_size=size, ndf=WIDTH, channels=1)


def test_weights_init_follows_dcgan_statistics() -> None:
    # Given a full-width 64 x 64 generator initialised the DCGAN way
    net = Generator(image_size=64, nz=100, ngf=64, channels=3)
    net.apply(partial(weights_init, generator=torch.Generator().manual_seed(0)))
    # Then conv weights are N(0, 0.02), BN weights N(1, 0.02) and BN biases zero
    conv = torch.cat([m.weight.detach().flatten() for m in _layers(net, nn.ConvTranspose2d)])
    bns = _layers(net, nn.BatchNorm2d)
    bn_weight = torch.cat([m.weight.detach() for m in bns])
    assert conv.mean().abs() < INIT_STD / 100
    assert conv.std().item() == pytest.approx(INIT_STD, rel=0.01)
    assert bn_weight.mean().item() == pytest.approx(BN_INIT_MEAN, abs=INIT_STD / 5)
    assert bn_weight.std().item() == pytest.approx(INIT_STD, rel=0.15)
    assert all(torch.count_nonzero(m.bias) == 0 for m in bns)


def test_weights_init_is_reproducible_from_a_seeded_generator() -> None:
    nets = [Discriminator(image_size=32, ndf=8, channels=1) for _ in range(3)]
    for net, seed in zip(nets, [5, 5, 6], strict=True):
        net.apply(partial(weights_init, generator=torch.Generator().manual_seed(seed)))
    same, other = nets[1].state_dict(), nets[2].state_dict()
    first = nets[0].state_dict()
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not torch.equal(first["main.0.weight"], other["main.0.weight"])


def test_the_dense_generator_without_batch_norm_draws_each_point_from_its_latent_alone() -> None:
    # Given the lesson's dense generator with and without its batch norms, in training mode
    torch.manual_seed(0)
    with_bn = MLPGenerator(nz=2, ngf=WIDTH, out_shape=(2,), tanh=False).train()
    without = MLPGenerator(nz=2, ngf=WIDTH, out_shape=(2,), tanh=False, batchnorm=False).train()
    z = torch.randn(64, 2)
    assert len(_layers(with_bn, nn.BatchNorm1d)) == 3
    assert _layers(without, nn.BatchNorm1d) == []
    with torch.no_grad():
        alone = torch.cat([without(z[i : i + 1]) for i in range(4)])
        # Then each point drawn inside batches of several sizes is the point drawn alone, up to float
        # rounding: a matmul over 64 rows and one over 1 row may take other kernel paths, so not bit for bit
        for size in BATCH_SIZES:
            torch.testing.assert_close(without(z[:size])[:4], alone, rtol=0, atol=ROUNDING_ATOL)
        # And batch norm moves the same points by orders of magnitude more than that tolerance
        bn_shift = (with_bn(z)[:4] - with_bn(z[:4])).abs().max().item()
    assert bn_shift > SIGNAL_OVER_ROUNDING * ROUNDING_ATOL


@pytest.mark.parametrize(
    "net",
    [
        MLPDiscriminator(ndf=WIDTH, in_shape=(2,), pack=2),
        Discriminator(image_size=16, ndf=WIDTH, channels=1, pack=2),
    ],
    ids=["mlp", "dcgan"],
)
def test_a_packed_discriminator_judges_consecutive_samples_together(net: nn.Module) -> None:
    # Given PacGAN's D with packs of 2, and a batch of 6 samples
    torch.manual_seed(0)
    net.eval()
    shape = (2,) if isinstance(net, MLPDiscriminator) else (1, 16, 16)
    x = torch.randn(6, *shape)
    # Then it gives one logit per pack, and each depends on both samples of its pack and no other
    out = net(x)
    assert out.shape == (3,)
    changed = x.clone()
    changed[1] += 1.0  # the second sample of the first pack
    moved = net(changed)
    assert moved[0] != out[0]
    torch.testing.assert_close(moved[1:], out[1:], rtol=0, atol=ROUNDING_ATOL)
    assert (moved[0] - out[0]).abs().item() > SIGNAL_OVER_ROUNDING * ROUNDING_ATOL
    # A batch that does not split into packs is refused
    with pytest.raises(ValueError, match="does not split into packs of 2"):
        net(x[:5])
