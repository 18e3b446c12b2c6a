"""Gram matrices and the content, style, total-variation and perceptual losses."""

from __future__ import annotations

import pytest
import torch

from workers.style.images import load_builtin_image, to_tensor
from workers.style.losses import (
    ContentLoss,
    PerceptualLoss,
    StyleLoss,
    TotalVariationLoss,
    gram_matrix,
    gram_targets,
)
from workers.style.vgg import build_vgg19

SEED = 0
LAYER = "f"  # a made-up layer name for feature-level tests
BLEND_STEPS = 200
BLEND_IMAGE_SIZE = 24
BLEND_IMAGE_STEPS = 40
BLEND_LR = 0.05


def _relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _tile(tile: torch.Tensor, times: int) -> torch.Tensor:
    return tile.repeat(1, 1, times, times)


# -- gram_matrix -----------------------------------------------------------------------------


def test_gram_matrix_of_a_known_tensor_matches_the_hand_computed_one() -> None:
    # Given 2 channels over a 2 x 2 grid: [1, 2, 3, 4] and [0, 1, 0, 1]
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    # Then F F^T = [[30, 6], [6, 2]], divided by C * H * W = 8
    expected = torch.tensor([[[30.0, 6.0], [6.0, 2.0]]]) / 8
    torch.testing.assert_close(gram_matrix(feat), expected)


def test_gram_matrix_is_per_batch_item_and_symmetric() -> None:
    feat = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(SEED))
    gram = gram_matrix(feat)
    assert gram.shape == (3, 5, 5)
    torch.testing.assert_close(gram, gram.transpose(1, 2))
    torch.testing.assert_close(gram[1], gram_matrix(feat[1:2])[0])


def test_gram_matrix_rejects_features_without_a_batch_dimension() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.zeros(5, 4, 4))


def test_gram_of_a_tiled_texture_does_not_depend_on_its_size() -> None:
    # Given one periodic feature texture at 8 x 8 and at 32 x 32
    tile = torch.rand(1, 6, 4, 4, generator=torch.Generator().manual_seed(SEED))
    small, large = _tile(tile, 2), _tile(tile, 8)
    # Then the normalised Grams are equal, while the raw sums differ by the area ratio (16x)
    torch.testing.assert_close(gram_matrix(small), gram_matrix(large))
    raw_small = small.flatten(2) @ small.flatten(2).transpose(1, 2)
    raw_large = large.flatten(2) @ large.flatten(2).transpose(1, 2)
    torch.testing.assert_close(raw_large, raw_small * 16)


def test_style_loss_of_one_texture_at_two_sizes_is_small_next_to_another_texture() -> None:
    # Given a random VGG and a 16 px picture tile repeated to 32 px and to 64 px
    layers = ("relu1_1", "relu2_1", "relu3_1")
    encoder = build_vgg19("random", seed=SEED, layers=layers)
    tile = to_tensor(load_builtin_image("coffee"), 32)[..., :16, :16]
    other = to_tensor(load_builtin_image("camera"), 32)[..., :16, :16]
    with torch.no_grad():
        small = gram_targets(encoder(_tile(tile, 2)), layers)
        large_feats = encoder(_tile(tile, 4))
        other_feats = encoder(_tile(other, 4))
    loss = StyleLoss([small], [1.0], layers, None, weight=1.0)
    # When the 64 px image is scored against the 32 px image's Grams
    same_texture = float(loss(large_feats))
    other_texture = float(loss(other_feats))
    # Then it matches far better than a different texture at the same size does (zero padding
    # at the borders is all that differs, and it weighs more in deeper, coarser layers)
    assert same_texture < 0.05 * other_texture
    for layer in layers:
        same = _relative_distance(gram_matrix(large_feats[layer]), small[layer])
        different = _relative_distance(gram_matrix(other_feats[layer]), small[layer])
        assert same < 0.5 * different


# -- TotalVariationLoss ----------------------------------------------------------------------


def test_tv_loss_is_zero_on_a_constant_image() -> None:
    image = torch.full((1, 3, 8, 8), 0.3)
    assert float(TotalVariationLoss(weight=1.0)(image)) == 0.0


def test_tv_loss_of_vertical_stripes_is_the_weighted_mean_squared_step() -> None:
    # Given columns alternating 0, 1, 0, 1: every horizontal neighbour pair differs by 1
    image = torch.zeros(1, 1, 4, 4)
    image[..., 1::2] = 1.0
    # Then TV = weight * (vertical 0 + horizontal mean 1)
    assert float(TotalVariationLoss(weight=2.0)(image)) == pytest.approx(2.0)


def test_tv_loss_is_positive_on_a_picture_and_scales_with_its_weight() -> None:
    image = to_tensor(load_builtin_image("astronaut"), 32)
    one = float(TotalVariationLoss(weight=1.0)(image))
    assert one > 0
    assert float(TotalVariationLoss(weight=10.0)(image)) == pytest.approx(10 * one)


# -- ContentLoss / PerceptualLoss ------------------------------------------------------------


def test_content_loss_is_zero_at_the_target_and_weighted_mse_elsewhere() -> None:
    target = {LAYER: torch.ones(1, 2, 3, 3)}
    loss = ContentLoss(target, [LAYER], weight=4.0)
    assert float(loss(target)) == 0.0
    assert float(loss({LAYER: torch.full((1, 2, 3, 3), 3.0)})) == pytest.approx(4.0 * 4.0)


def test_content_loss_refuses_targets_without_the_layer() -> None:
    with pytest.raises(ValueError, match="relu4_2"):
        ContentLoss({LAYER: torch.ones(1, 1, 1, 1)}, ["relu4_2"], weight=1.0)


def test_style_loss_refuses_a_blend_of_the_wrong_length() -> None:
    grams = {LAYER: torch.eye(2).unsqueeze(0)}
    with pytest.raises(ValueError, match="2 blend weights for 1 style targets"):
        StyleLoss([grams], [0.5, 0.5], [LAYER], None, weight=1.0)


def test_perceptual_loss_returns_each_weighted_term_and_their_sum() -> None:
    # Given content and style targets on two made-up layers and a random image
    generator = torch.Generator().manual_seed(SEED)
    feats = {"a": torch.rand(1, 2, 4, 4, generator=generator), "b": torch.rand(1, 3, 2, 2, generator=generator)}
    image = torch.rand(1, 3, 4, 4, generator=generator)
    content = ContentLoss({"a": torch.zeros(1, 2, 4, 4)}, ["a"], weight=2.0)
    style = StyleLoss([{"b": torch.zeros(1, 3, 3)}], [1.0], ["b"], None, weight=3.0)
    loss = PerceptualLoss(content, style, TotalVariationLoss(weight=5.0))
    # When it reads the features once
    out = loss(image, feats)
    # Then the terms are the individual losses and total is their sum
    assert set(out) == {"content", "style", "tv", "total"}
    torch.testing.assert_close(out["content"], content(feats))
    torch.testing.assert_close(out["style"], style(feats))
    torch.testing.assert_close(out["tv"], TotalVariationLoss(weight=5.0)(image))
    torch.testing.assert_close(out["total"], out["content"] + out["style"] + out["tv"])
    assert loss.layers == ("a", "b")


# -- Style blending --------------------------------------------------------------------------


def _optimise_features(targets: list[dict[str, torch.Tensor]], blend: list[float]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    feat = torch.rand(1, 4, 8, 8, generator=generator).requires_grad_(True)
    loss = StyleLoss(targets, blend, [LAYER], None, weight=1.0)
    optimizer = torch.optim.Adam([feat], lr=BLEND_LR)
    for _ in range(BLEND_STEPS):
        optimizer.zero_grad()
        loss({LAYER: feat}).backward()
        optimizer.step()
    return gram_matrix(feat.detach())


def test_blended_style_loss_is_minimised_at_the_blend_of_the_target_grams() -> None:
    # Given two different Gram targets
    generator = torch.Generator().manual_seed(SEED + 1)
    a = gram_matrix(torch.rand(1, 4, 8, 8, generator=generator))
    b = gram_matrix(2 * torch.rand(1, 4, 8, 8, generator=generator))
    # When free features are optimised against a 0.7 / 0.3 blend
    gram = _optimise_features([{LAYER: a}, {LAYER: b}], [0.7, 0.3])
    # Then their Gram lands on 0.7 A + 0.3 B: 0.3 |B - A| from A and 0.7 |B - A| from B
    assert _relative_distance(gram, 0.7 * a + 0.3 * b) < 0.02
    gap = float((b - a).norm())
    assert float((gram - a).norm()) == pytest.approx(0.3 * gap, rel=0.1)
    assert float((gram - b).norm()) == pytest.approx(0.7 * gap, rel=0.1)


@pytest.mark.parametrize(("blend", "closer_to"), [([0.7, 0.3], "coffee"), ([0.3, 0.7], "rocket")])
def test_optimised_image_ends_closer_to_the_heavier_style(blend: list[float], closer_to: str) -> None:
    # Given a random VGG (first layer only, to keep it quick) and two style pictures
    layers = ("relu1_1",)
    encoder = build_vgg19("random", seed=SEED, layers=layers)
    names = ["coffee", "rocket"]
    with torch.no_grad():
        targets = [gram_targets(encoder(to_tensor(load_builtin_image(n), BLEND_IMAGE_SIZE)), layers) for n in names]
    loss = StyleLoss(targets, blend, layers, None, weight=1.0)
    # When a grey image is optimised against the blend
    image = torch.full((1, 3, BLEND_IMAGE_SIZE, BLEND_IMAGE_SIZE), 0.5, requires_grad=True)
    optimizer = torch.optim.Adam([image], lr=BLEND_LR)
    for _ in range(BLEND_IMAGE_STEPS):
        optimizer.zero_grad()
        loss(encoder(image)).backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
    # Then its Grams are closer to the style with the larger share
    with torch.no_grad():
        feats = encoder(image)
    distance = {
        name: sum(float(torch.mean((gram_matrix(feats[layer]) - grams[layer]) ** 2)) for layer in layers)
        for name, grams in zip(names, targets, strict=True)
    }
    other = next(n for n in names if n != closer_to)
    assert distance[closer_to] < distance[other]
