"""GAN losses and D regularisers against closed forms: BCE, hinge, WGAN, one-sided smoothing, WGAN-GP and R1."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from workers.gan import losses

LOGITS_REAL = torch.tensor([2.0, -0.5, 0.3])
LOGITS_FAKE = torch.tensor([-1.0, 0.7, -3.0])


def test_bce_is_the_classic_two_term_loss_and_g_is_non_saturating() -> None:
    expected = F.binary_cross_entropy(torch.sigmoid(LOGITS_REAL), torch.ones(3)) + F.binary_cross_entropy(
        torch.sigmoid(LOGITS_FAKE), torch.zeros(3)
    )
    assert torch.allclose(losses.d_loss("bce", LOGITS_REAL, LOGITS_FAKE, real_target=1.0), expected)
    assert torch.allclose(losses.g_loss("bce", LOGITS_FAKE), -torch.log(torch.sigmoid(LOGITS_FAKE)).mean())


def test_one_sided_smoothing_moves_only_the_real_target() -> None:
    smoothed = losses.d_loss("bce", LOGITS_REAL, LOGITS_FAKE, real_target=0.9)
    target = torch.full((3,), 0.9)
    expected = F.binary_cross_entropy_with_logits(LOGITS_REAL, target) + F.binary_cross_entropy_with_logits(
        LOGITS_FAKE, torch.zeros(3)
    )
    assert torch.allclose(smoothed, expected)
    assert not torch.allclose(smoothed, losses.d_loss("bce", LOGITS_REAL, LOGITS_FAKE, real_target=1.0))


def test_hinge_and_wgan() -> None:
    # Hinge is zero once real logits are >= 1 and fake ones <= -1; G pushes fake logits up.
    assert losses.d_loss("hinge", torch.tensor([1.5, 1.0]), torch.tensor([-2.0, -1.0]), real_target=1.0) == 0
    hinge = losses.d_loss("hinge", LOGITS_REAL, LOGITS_FAKE, real_target=1.0)
    assert math.isclose(float(hinge), (0 + 1.5 + 0.7) / 3 + (0 + 1.7 + 0) / 3, rel_tol=1e-6)
    wgan = losses.d_loss("wgan-gp", LOGITS_REAL, LOGITS_FAKE, real_target=1.0)
    assert torch.allclose(wgan, LOGITS_FAKE.mean() - LOGITS_REAL.mean())
    assert torch.allclose(losses.g_loss("hinge", LOGITS_FAKE), -LOGITS_FAKE.mean())


def test_d_outputs_are_probabilities_only_for_bce() -> None:
    assert torch.allclose(losses.d_outputs("bce", LOGITS_REAL), torch.sigmoid(LOGITS_REAL).mean())
    assert torch.allclose(losses.d_outputs("hinge", LOGITS_REAL), LOGITS_REAL.mean())


@pytest.mark.parametrize(("scale", "expected"), [(1.0, 0.0), (3.0, losses.GP_WEIGHT * 4.0)])
def test_gradient_penalty_of_a_linear_critic(scale: float, expected: float) -> None:
    # D(x) = w.x has gradient w everywhere: the penalty is 10 (||w|| - 1)^2
    w = torch.tensor([0.6, 0.8]) * scale

    def critic(x: torch.Tensor) -> torch.Tensor:
        return x @ w

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    penalty = losses.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    assert math.isclose(float(penalty), expected, abs_tol=1e-5)


def test_gradient_penalty_with_packing_takes_the_norm_over_each_pack() -> None:
    # D(pack) = w.x1 + w.x2 with ||w|| = 1: each sample's gradient has norm 1, each pack's sqrt(2)
    w = torch.tensor([0.6, 0.8])

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x @ w).reshape(-1, 2).sum(dim=1)

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    penalty = losses.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0), pack=2)
    assert math.isclose(float(penalty), losses.GP_WEIGHT * (math.sqrt(2) - 1) ** 2, rel_tol=1e-5)


def test_r1_penalises_the_gradient_at_real_data_and_reaches_d() -> None:
    w = torch.tensor([0.6, 0.8], requires_grad=True)
    real = torch.randn(5, 2).requires_grad_(True)
    penalty = losses.r1_penalty(real @ (2 * w), real, gamma=10.0)
    assert math.isclose(float(penalty), 10.0 / 2 * 4.0, rel_tol=1e-6)  # gamma/2 * ||2w||^2
    penalty.backward()
    assert w.grad is not None and float(w.grad.norm()) > 0


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        losses.d_loss("lsgan", LOGITS_REAL, LOGITS_FAKE, real_target=1.0)
