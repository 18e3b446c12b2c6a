"""Adversarial losses on D's logits (non-saturating BCE, hinge, WGAN) and D regularisers (WGAN-GP, R1).

Each D loss is to be minimised by D and each G loss by G. ``d_loss`` takes the logits of a
real and a fake batch; ``g_loss`` the logits of the fake batch that G is trained through.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from shared.jobs.gan_train import GAN_LOSSES

LOSSES = GAN_LOSSES  # the params' names: bce, hinge, wgan-gp
BCE, HINGE, WGAN_GP = LOSSES
REAL_LABEL = 1.0
FAKE_LABEL = 0.0
HINGE_MARGIN = 1.0
GP_WEIGHT = 10.0  # Gulrajani et al. 2017, lambda
GP_TARGET_NORM = 1.0
R1_HALF = 0.5  # R1 is gamma / 2 * E ||grad D(x)||^2 (Mescheder et al. 2018)


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, *, real_target: float) -> torch.Tensor:
    """D's loss; ``real_target`` is BCE's label for real data (1, or less with one-sided smoothing)."""
    if kind == BCE:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, FAKE_LABEL))
        return real + fake
    if kind == HINGE:
        return F.relu(HINGE_MARGIN - real_logits).mean() + F.relu(HINGE_MARGIN + fake_logits).mean()
    if kind == WGAN_GP:
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {list(LOSSES)}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: non-saturating -log D(G(z)) for BCE, -D(G(z)) for hinge and WGAN."""
    if kind == BCE:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.full_like(fake_logits, REAL_LABEL))
    if kind in (HINGE, WGAN_GP):
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}: use one of {list(LOSSES)}")


def d_outputs(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """What the d_real/d_fake metrics report: D's probability for BCE, the raw critic value otherwise."""
    return torch.sigmoid(logits).mean() if kind == BCE else logits.mean()


def gradient_penalty(
    net_d: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    generator: torch.Generator,
    pack: int = 1,
) -> torch.Tensor:
    """WGAN-GP: weight * E (||grad D(x_hat)|| - 1)^2 on random interpolates of real and fake samples.

    With PacGAN packing, D is a function of each pack of ``pack`` consecutive samples, so the norm is the pack's.
    """
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(net_d(mixed).sum(), mixed, create_graph=True)
    norms = grad.reshape(grad.shape[0] // pack, -1).norm(dim=1)
    return GP_WEIGHT * (norms - GP_TARGET_NORM).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """R1: gamma / 2 * E ||grad_x D(x)||^2 at real data; ``real`` must require grad and feed ``real_logits``."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return gamma * R1_HALF * grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1).mean()


MODE_SEEKING_EPS = 1e-5


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019, their code's form): 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|
    + eps), the batch's first half against its second; small when distinct latents give distinct samples."""
    half = fake.shape[0] // 2
    if half == 0:
        raise ValueError("the mode-seeking term needs a batch of at least 2")
    images = fake.float()
    ratio = (images[:half] - images[half : 2 * half]).abs().mean() / (z[:half] - z[half : 2 * half]).abs().mean()
    return 1.0 / (ratio + MODE_SEEKING_EPS)
