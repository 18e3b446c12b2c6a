"""DiffAugment: shapes kept, seeded, differentiable, and each policy does what it says."""

from __future__ import annotations

import pytest
import torch

from workers.gan.augment import POLICIES, diff_augment

SIZE = 16


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_policy_keeps_the_shape_is_seeded_and_lets_gradients_through(policy: str) -> None:
    x = torch.rand(4, 3, SIZE, SIZE, requires_grad=True)
    out = diff_augment(x, [policy], generator=_gen())
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    assert torch.equal(out, diff_augment(x, [policy], generator=_gen()))
    assert not torch.equal(out, diff_augment(x, [policy], generator=_gen(1)))
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_translation_moves_content_without_changing_it() -> None:
    x = torch.zeros(64, 1, SIZE, SIZE)
    x[:, :, 6:10, 6:10] = 1.0  # a centred square stays whole under a shift of at most 2 px
    out = diff_augment(x, ["translation"], generator=_gen())
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert len({tuple(o.nonzero()[0].tolist()) for o in out}) > 1


def test_cutout_zeros_at_most_a_half_side_square() -> None:
    x = torch.ones(32, 2, SIZE, SIZE)
    out = diff_augment(x, ["cutout"], generator=_gen())
    zeroed = (out == 0).float().mean(dim=(1, 2, 3))
    assert bool((zeroed > 0).all()) and bool((zeroed <= 0.25).all())


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        diff_augment(torch.zeros(1, 1, 4, 4), ["rotate"], generator=_gen())
