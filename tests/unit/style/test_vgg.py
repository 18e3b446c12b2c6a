"""The VGG19 encoder: layer names, trimming, random and ImageNet weights, one-pass forward."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from shared.jobs.vgg_layers import layer_names
from workers.style.images import load_builtin_image, to_tensor
from workers.style.vgg import (
    HUB_CHECKPOINTS_DIR,
    VGG19_LAYERS,
    WeightsUnavailableError,
    build_vgg,
    build_vgg19,
)

SEED = 0
SIZE = 64
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
ALL_USED = (*STYLE_LAYERS, "relu4_2")
QUICK_S = 5.0
VGG19_WEIGHTS_FILE = Path(torchvision.models.VGG19_Weights.IMAGENET1K_V1.url).name


def _cache_file(weights_dir: Path) -> Path:
    path = weights_dir / HUB_CHECKPOINTS_DIR / VGG19_WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_layer_names_map_onto_torchvision_vgg19_feature_indices() -> None:
    # Given torchvision's VGG19 (built on the meta device: no memory, no init cost)
    with torch.device("meta"):
        features = torchvision.models.vgg19().features
    # Then every name has the right module kind at the same index
    assert len(VGG19_LAYERS) == len(features)
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for name, module in zip(VGG19_LAYERS, features, strict=True):
        assert isinstance(module, kinds[name.rstrip("0123456789_")]), name
    assert VGG19_LAYERS.index("conv4_2") == 21
    assert VGG19_LAYERS.index("relu5_1") == 29
    assert VGG19_LAYERS[-1] == "pool5"


def test_random_weights_are_deterministic_per_seed() -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        return build_vgg19("random", seed=seed, layers=["relu2_1"]).state_dict()

    first, again, other = weights(SEED), weights(SEED), weights(SEED + 1)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["body.conv1_1.weight"], other["body.conv1_1.weight"])


def test_building_random_weights_leaves_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    build_vgg19("random", seed=SEED, layers=["relu1_2"])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_encoder_is_cut_after_the_deepest_requested_layer_and_frozen() -> None:
    # When the deepest requested layer is relu3_1 (conv2_2 is requested too, out of order)
    encoder = build_vgg19("random", seed=SEED, layers=["relu3_1", "conv2_2"])
    names = [name for name, _ in encoder.body.named_children()]
    # Then the body is exactly conv1_1 ... relu3_1: nothing after it
    assert names == list(VGG19_LAYERS[: VGG19_LAYERS.index("relu3_1") + 1])
    assert names[-1] == "relu3_1"
    # And it is frozen, in eval mode
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())


def test_one_forward_returns_every_requested_layer_with_its_shape() -> None:
    encoder = build_vgg19("random", seed=SEED, layers=ALL_USED)
    feats = encoder(torch.rand(1, 3, SIZE, SIZE))
    assert set(feats) == set(ALL_USED)
    assert feats["relu1_1"].shape == (1, 64, 64, 64)
    assert feats["relu2_1"].shape == (1, 128, 32, 32)
    assert feats["relu3_1"].shape == (1, 256, 16, 16)
    assert feats["relu4_1"].shape == (1, 512, 8, 8)
    assert feats["relu4_2"].shape == (1, 512, 8, 8)
    assert feats["relu5_1"].shape == (1, 512, 4, 4)


def test_a_requested_conv_output_is_not_overwritten_by_its_relu() -> None:
    encoder = build_vgg19("random", seed=SEED, layers=["conv1_1", "relu1_1"])
    feats = encoder(torch.rand(1, 3, 16, 16))
    assert (feats["conv1_1"] < 0).any()
    torch.testing.assert_close(feats["relu1_1"], feats["conv1_1"].clamp(min=0))


def test_random_weights_give_unit_scale_activations_on_a_picture() -> None:
    # Given the per-layer normalisation (mean activation 1 on the calibration image)
    encoder = build_vgg19("random", seed=SEED, layers=ALL_USED)
    with torch.no_grad():
        feats = encoder(to_tensor(load_builtin_image("astronaut"), SIZE))
    # Then a natural picture gets activations of order one at every used layer, deep ones too
    for layer, feat in feats.items():
        assert 0.2 < float(feat.mean()) < 5.0, layer


def test_imagenet_weights_missing_from_an_empty_cache_fail_fast_with_a_remedy(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        build_vgg19("imagenet", seed=SEED, layers=["relu1_1"], weights_dir=tmp_path)
    assert time.monotonic() - started < QUICK_S
    message = str(info.value)
    assert 'weights="random"' in message
    assert "ATELIER_TORCH_HOME" in message
    assert str(tmp_path / HUB_CHECKPOINTS_DIR / VGG19_WEIGHTS_FILE) in message
    assert isinstance(info.value, RuntimeError)


def test_a_corrupt_cached_weights_file_is_weights_unavailable(tmp_path: Path) -> None:
    _cache_file(tmp_path).write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsUnavailableError, match="loading failed"):
        build_vgg19("imagenet", seed=SEED, layers=["relu1_1"], weights_dir=tmp_path)


def test_imagenet_weights_are_read_from_the_cache_by_torchvision_index(tmp_path: Path) -> None:
    # Given a (fake, small) torchvision-style state dict in the hub cache
    generator = torch.Generator().manual_seed(SEED)
    state = {
        "features.0.weight": torch.randn(64, 3, 3, 3, generator=generator),
        "features.0.bias": torch.randn(64, generator=generator),
        "features.2.weight": torch.randn(64, 64, 3, 3, generator=generator),
        "features.2.bias": torch.randn(64, generator=generator),
    }
    torch.save(state, _cache_file(tmp_path))
    # When an encoder up to relu1_2 is built with ImageNet weights
    encoder = build_vgg19("imagenet", seed=SEED, layers=["relu1_2"], weights_dir=tmp_path)
    # Then conv1_1 / conv1_2 hold features.0 / features.2
    loaded = encoder.state_dict()
    assert torch.equal(loaded["body.conv1_1.weight"], state["features.0.weight"])
    assert torch.equal(loaded["body.conv1_1.bias"], state["features.0.bias"])
    assert torch.equal(loaded["body.conv1_2.weight"], state["features.2.weight"])
    assert torch.equal(loaded["body.conv1_2.bias"], state["features.2.bias"])


def test_a_state_dict_lacking_a_needed_layer_is_weights_unavailable(tmp_path: Path) -> None:
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, _cache_file(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="conv1_1"):
        build_vgg19("imagenet", seed=SEED, layers=["relu1_1"], weights_dir=tmp_path)


@pytest.mark.parametrize(
    ("weights", "layers", "match"),
    [("random", ["relu9_9"], "relu9_9"), ("random", [], "at least one layer"), ("resnet", ["relu1_1"], "resnet")],
)
def test_bad_arguments_are_value_errors(weights: str, layers: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_vgg19(weights, seed=SEED, layers=layers)


def test_vgg16_layer_names_map_onto_torchvision_vgg16_feature_indices() -> None:
    with torch.device("meta"):
        features = torchvision.models.vgg16().features
    names = layer_names("vgg16")
    assert len(names) == len(features)
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for name, module in zip(names, features, strict=True):
        assert isinstance(module, kinds[name.rstrip("0123456789_")]), name
    assert names.index("conv4_2") == 19
    assert "conv5_3" in names and "conv5_4" not in names


def test_a_vgg16_encoder_with_average_pooling_has_the_vgg16_body() -> None:
    # When a VGG16 encoder up to relu4_2 is built with average pooling
    encoder = build_vgg("vgg16", "random", seed=SEED, layers=["relu4_2", "relu1_1"], pooling="avg")
    body = dict(encoder.body.named_children())
    # Then it has VGG16's layers (3 convs in block 3), average pools, and the right shapes
    assert list(body) == list(layer_names("vgg16")[: layer_names("vgg16").index("relu4_2") + 1])
    assert "conv3_4" not in body
    assert all(isinstance(body[f"pool{i}"], nn.AvgPool2d) for i in (1, 2, 3))
    feats = encoder(torch.rand(1, 3, SIZE, SIZE))
    assert feats["relu4_2"].shape == (1, 512, 8, 8)


def test_max_and_average_pooling_give_different_deep_features() -> None:
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED))
    max_pool = build_vgg("vgg19", "random", seed=SEED, layers=["relu2_1"], pooling="max")(image)
    avg_pool = build_vgg("vgg19", "random", seed=SEED, layers=["relu2_1"], pooling="avg")(image)
    assert not torch.allclose(max_pool["relu2_1"], avg_pool["relu2_1"])


def test_missing_imagenet_vgg16_weights_name_the_vgg16_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        build_vgg("vgg16", "imagenet", seed=SEED, layers=["relu1_1"], weights_dir=tmp_path)
    vgg16_file = Path(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url).name
    assert "ImageNet VGG16 weights are unavailable" in str(info.value)
    assert str(tmp_path / HUB_CHECKPOINTS_DIR / vgg16_file) in str(info.value)


def test_vgg16_imagenet_weights_are_read_by_vgg16_index(tmp_path: Path) -> None:
    # Given a fake VGG16 state dict (VGG16's conv4_1 is features.17; VGG19's is features.19)
    vgg16_file = Path(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url).name
    path = tmp_path / HUB_CHECKPOINTS_DIR / vgg16_file
    path.parent.mkdir(parents=True)
    generator = torch.Generator().manual_seed(SEED)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().features.state_dict().items()}
    state = {f"features.{k}": torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    torch.save(state, path)
    # When a VGG16 encoder up to relu4_1 is built from it
    encoder = build_vgg("vgg16", "imagenet", seed=SEED, layers=["relu4_1"], weights_dir=tmp_path)
    # Then conv4_1 holds features.17
    assert torch.equal(encoder.state_dict()["body.conv4_1.weight"], state["features.17.weight"])
