"""Gatys losses: content (features), style (Gram matrices), total variation, and a container.

Every loss object carries its own weight and returns an already weighted scalar. Targets
(content features, style Grams) are computed once, before the optimisation loop, and the
losses read the encoder's single forward pass (``{layer: activation}``) of the current image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

FeatureMap = Mapping[str, torch.Tensor]

FEATURE_DIMS = 4  # B x C x H x W
IMAGE_DIMS = 4  # B x 3 x H x W


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """Channel Gram matrices (B, C, C) of features (B, C, H, W), divided by C * H * W.

    Dividing by H * W turns the sum over positions into a mean, so the same texture gives
    the same Gram at any image size and ``style_weight`` does not depend on ``size``; the
    extra 1 / C keeps layers of different widths on a comparable scale.
    """
    if feat.dim() != FEATURE_DIMS:
        raise ValueError(f"expected features (B, C, H, W), got shape {tuple(feat.shape)}")
    batch, channels, height, width = feat.shape
    flat = feat.reshape(batch, channels, height * width)
    return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def gram_targets(feats: FeatureMap, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Detached Gram matrices of ``feats`` at ``layers`` (a style image's targets)."""
    return {layer: gram_matrix(feats[layer]).detach() for layer in layers}


def _equal_weights(count: int) -> list[float]:
    return [1.0 / count] * count


class ContentLoss:
    """weight * sum over layers of the MSE between current and target features."""

    def __init__(self, target_feats: FeatureMap, layers: Sequence[str], weight: float) -> None:
        missing = [layer for layer in layers if layer not in target_feats]
        if missing:
            raise ValueError(f"content targets lack layers {missing}")
        self.layers = tuple(layers)
        self.targets = {layer: target_feats[layer].detach() for layer in self.layers}
        self.weight = weight

    def __call__(self, feats: FeatureMap) -> torch.Tensor:
        """The weighted content loss of the current features."""
        terms = [F.mse_loss(feats[layer], self.targets[layer]) for layer in self.layers]
        return self.weight * torch.stack(terms).sum()


class StyleLoss:
    """weight * sum_l layer_weight_l * sum_s blend_s * MSE(Gram_l(current), Gram_l(style s))."""

    def __init__(
        self,
        targets: Sequence[Mapping[str, torch.Tensor]],
        blend: Sequence[float],
        layers: Sequence[str],
        layer_weights: Sequence[float] | None,
        weight: float,
    ) -> None:
        if not targets:
            raise ValueError("at least one style target is needed")
        if len(blend) != len(targets):
            raise ValueError(f"{len(blend)} blend weights for {len(targets)} style targets")
        if any(b < 0 for b in blend) or sum(blend) <= 0:
            raise ValueError("blend weights must be non-negative and not all zero")
        layer_weights = _equal_weights(len(layers)) if layer_weights is None else list(layer_weights)
        if len(layer_weights) != len(layers):
            raise ValueError(f"{len(layer_weights)} layer weights for {len(layers)} style layers")
        for index, grams in enumerate(targets):
            missing = [layer for layer in layers if layer not in grams]
            if missing:
                raise ValueError(f"style target {index} lacks Gram matrices for layers {missing}")
        self.layers = tuple(layers)
        self.layer_weights = tuple(layer_weights)
        self.blend = tuple(blend)
        self.targets = [{layer: grams[layer].detach() for layer in self.layers} for grams in targets]
        self.weight = weight

    def __call__(self, feats: FeatureMap) -> torch.Tensor:
        """The weighted, blended style loss of the current features."""
        terms: list[torch.Tensor] = []
        for layer, layer_weight in zip(self.layers, self.layer_weights, strict=True):
            gram = gram_matrix(feats[layer])
            for share, grams in zip(self.blend, self.targets, strict=True):
                terms.append(layer_weight * share * F.mse_loss(gram, grams[layer].expand_as(gram)))
        return self.weight * torch.stack(terms).sum()


class TotalVariationLoss:
    """weight * mean squared difference between vertically and horizontally adjacent pixels."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The weighted total variation of ``image`` (B, C, H, W); zero for a constant image."""
        if image.dim() != IMAGE_DIMS:
            raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(image.shape)}")
        vertical = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).mean()
        horizontal = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).mean()
        return self.weight * (vertical + horizontal)


class PerceptualLoss:
    """Content + style + TV over one encoder pass; returns {content, style, tv, total}."""

    def __init__(self, content: ContentLoss, style: StyleLoss, tv: TotalVariationLoss) -> None:
        self.content = content
        self.style = style
        self.tv = tv

    @property
    def layers(self) -> tuple[str, ...]:
        """Every encoder layer the losses read, in first-use order."""
        return tuple(dict.fromkeys(self.content.layers + self.style.layers))

    def __call__(self, image: torch.Tensor, feats: FeatureMap) -> dict[str, torch.Tensor]:
        """Weighted losses of ``image`` given its encoder features ``feats``."""
        content = self.content(feats)
        style = self.style(feats)
        tv = self.tv(image)
        return {"content": content, "style": style, "tv": tv, "total": content + style + tv}
