"""What a run's D and G minimise, built once from its params (in the spirit of stylegan2-ada's ``Loss``).

``GanLoss`` owns the adversarial loss (workers/gan/losses.py), DiffAugment on everything D
judges, and D's penalties (WGAN-GP, R1), so the loop's step reads as the lesson's two phases:
(1) update D on real and fake samples, (2) update G through D. ``Generate`` is G's forward
pass for the run's architecture: MSG feeds D G's image at every scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from shared.jobs.gan_train import GanTrainParams
from workers.gan import losses
from workers.gan.augment import diff_augment
from workers.gan.multiscale import MSG, MultiScaleGenerator
from workers.gan.state import Fakes, GanGenerator

Generate = Callable[[torch.Tensor, torch.Tensor | None], Fakes]


def generate_for(params: GanTrainParams, net_g: GanGenerator) -> Generate:
    """G's forward pass for this run: MSG's pyramid (every scale, so D's gradient reaches each), else G(z, labels)."""
    if params.arch == MSG and isinstance(net_g, MultiScaleGenerator):
        pyramid = net_g.pyramid
        return lambda z, _labels: pyramid(z)
    return lambda z, labels: net_g(z, labels)


def detached(fake: Fakes) -> Fakes:
    """``fake`` cut from G's graph (each scale of MSG's pyramid)."""
    return [f.detach() for f in fake] if isinstance(fake, list) else fake.detach()


def _single_scale(fake: Fakes) -> torch.Tensor:
    if isinstance(fake, list):  # GanTrainParams refuses gradient penalties with MSG
        raise ValueError("this loss needs single-scale fakes")
    return fake


@dataclass(frozen=True)
class GanLoss:
    """D's and G's losses, the augmentation of what D sees, and D's penalties, for one run."""

    kind: str
    real_target: float  # BCE's label for real data (below 1 with one-sided label smoothing)
    policies: tuple[str, ...]  # DiffAugment; empty: D sees its inputs as they are
    aux: torch.Generator  # the run's stream for augmentation draws and WGAN-GP interpolation weights
    pack: int
    r1_gamma: float | None

    @classmethod
    def of(cls, params: GanTrainParams, aux: torch.Generator) -> GanLoss:
        """The run's objective."""
        return cls(
            kind=params.loss,
            real_target=losses.REAL_LABEL - params.label_smoothing,
            policies=tuple(params.diffaugment or ()),
            aux=aux,
            pack=params.pack,
            r1_gamma=params.r1_gamma or None,
        )

    @property
    def needs_real_grad(self) -> bool:
        """Whether the real batch must require grad (R1 differentiates D at the real data)."""
        return self.r1_gamma is not None

    @property
    def d_can_win(self) -> bool:
        """Whether a near-zero D loss means D has won (BCE and hinge; a WGAN critic's loss is unbounded)."""
        return self.kind != losses.WGAN_GP

    def augment(self, x: Fakes) -> Fakes:
        """DiffAugment ``x`` with the run's stream (the same for real and fake, as D must see both alike)."""
        if not self.policies:
            return x
        if isinstance(x, list):  # GanTrainParams refuses DiffAugment with MSG
            raise ValueError("DiffAugment applies to single-scale images")
        return diff_augment(x, list(self.policies), generator=self.aux)

    def judge(self, net_d: nn.Module, x: Fakes, labels: torch.Tensor | None) -> torch.Tensor:
        """D's logits for ``x`` (of classes ``labels``), seen through the augmentation."""
        out: torch.Tensor = net_d(self.augment(x), labels)
        return out

    def discriminator(self, out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
        """D's adversarial loss on the logits of a real and a fake batch (fp32)."""
        return losses.d_loss(self.kind, out_real.float(), out_fake.float(), real_target=self.real_target)

    def penalised(
        self,
        d_loss: torch.Tensor,
        net_d: nn.Module,
        *,
        real: torch.Tensor,
        fake: Fakes,
        out_real: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """D's loss plus its penalties: WGAN-GP on interpolates, R1 at the real data."""
        total = d_loss
        if self.kind == losses.WGAN_GP:
            total = total + losses.gradient_penalty(
                partial(self.judge, net_d, labels=labels),
                real,
                _single_scale(fake),
                generator=self.aux,
                pack=self.pack,
            )
        if self.r1_gamma is not None:
            total = total + losses.r1_penalty(out_real, real, gamma=self.r1_gamma)
        return total

    def generator(self, out_g: torch.Tensor) -> torch.Tensor:
        """G's loss on D's logits for the fakes G is trained through (fp32)."""
        return losses.g_loss(self.kind, out_g.float())

    def d_outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the d_real/d_fake metrics report: D's probability for BCE, the raw critic value otherwise."""
        return losses.d_outputs(self.kind, logits)
