"""style.train (johnson): content sets, the transformer network, the training loop driven by in-memory hooks
(style loss on held-out pictures, artifacts, resume, divergence) and the safetensors model file.

Each test reads Given / When / Then."""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors
from torch import nn
from torchvision.utils import make_grid

from shared.jobs.style_train import StyleTrainParams
from tests.support.resume import stopped_and_resumed
from workers.hooks import InMemoryHooks
from workers.style.content import (
    PREVIEW_IMAGES,
    SHAPE_MOSAICS,
    TRAIN_IMAGES,
    ContentSet,
    builtin_content,
    content_from_images,
    preview_pictures,
)
from workers.style.images import load_builtin_image, to_png, to_tensor
from workers.style.johnson import (
    CARD_ARTIFACT,
    FINAL_PREVIEW_ARTIFACT,
    MODEL_ARTIFACT,
    PREVIEW_ARTIFACT,
    TransformerNet,
    load_model,
    model_bytes,
    stylize,
    train_johnson,
)
from workers.style.losses import StyleLoss, gram_targets
from workers.style.transfer import RANDOM_WEIGHTS_WARNING, build_loss_encoder
from workers.training import DivergenceError

pytestmark = pytest.mark.timeout(120)

STYLE = "coffee"
TRAIN_SIZE = 128
TRAIN_STEPS = 20
PREVIEW_EVERY = 10
MIN_STYLE_DROP = 5.0  # the held-out pictures' style loss, step-0 network / trained network
SMALL = {"width": 16, "residual_blocks": 2, "batch_size": 1}  # a small network: the test fits in seconds
RESUME_SIZE = 48
RESUME_STEPS = 6
RESUME_CHECKPOINT_EVERY = 3
STOP_AT = 4
METRICS = ("content_loss", "style_loss", "tv_loss", "total_loss")


def _params(**overrides: Any) -> StyleTrainParams:
    """Defaults except the style, random VGG weights and a small network."""
    fields: dict[str, Any] = {"styles": [STYLE], "weights": "random", "checkpoint_every": 10_000, **SMALL}
    return StyleTrainParams.model_validate(fields | overrides)


def _styles(params: StyleTrainParams) -> list[Image.Image]:
    return [load_builtin_image(name) for name in params.styles]


@pytest.fixture(scope="module")
def content() -> ContentSet:
    """The built-in content set, built once for the module."""
    return builtin_content()


@dataclass
class Trained:
    params: StyleTrainParams
    hooks: InMemoryHooks
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def trained(content: ContentSet) -> Trained:
    """One uninterrupted 128 px run of TRAIN_STEPS steps with previews every PREVIEW_EVERY steps."""
    params = _params(size=TRAIN_SIZE, steps=TRAIN_STEPS, preview_every=PREVIEW_EVERY)
    hooks = InMemoryHooks()
    return Trained(params, hooks, train_johnson(params, content, _styles(params), hooks))


# -- The transformer network -----------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 48), (33, 47), (7, 5), (2, 3)])
def test_the_network_keeps_height_and_width_for_even_and_odd_sizes(height: int, width: int) -> None:
    # Given a small network and a random batch of that size
    net = TransformerNet(width=8, residual_blocks=1)
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    # When it styles the batch
    styled = stylize(net, images)
    # Then the output has the input's shape, in [0, 1]
    assert styled.shape == (2, 3, height, width)
    assert float(styled.min()) >= 0.0 and float(styled.max()) <= 1.0


def test_the_network_is_johnsons_reflection_padded_instance_normed_and_upsample_convolved() -> None:
    # Given the default network
    modules = list(TransformerNet(width=32, residual_blocks=5).modules())
    kinds = {type(module) for module in modules}
    # Then it pads by reflection, normalises per instance (with a learnt scale and shift), upsamples then convolves
    assert {nn.ReflectionPad2d, nn.InstanceNorm2d, nn.Upsample} <= kinds
    assert nn.ConvTranspose2d not in kinds
    assert all(m.affine for m in modules if isinstance(m, nn.InstanceNorm2d))
    assert sum(isinstance(m, nn.Upsample) for m in modules) == 2
    # and the first and last convolutions are 9 x 9, mapping RGB to width and width back to RGB
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    assert (convs[0].in_channels, convs[0].out_channels, convs[0].kernel_size) == (3, 32, (9, 9))
    assert (convs[-1].in_channels, convs[-1].out_channels, convs[-1].kernel_size) == (32, 3, (9, 9))


def test_the_network_init_is_a_function_of_its_seed_and_leaves_the_global_rng_alone() -> None:
    # Given the global RNG's state
    before = torch.get_rng_state()
    # When two networks of one seed and one of another are built
    first, again, other = (TransformerNet(width=8, residual_blocks=1, seed=s) for s in (3, 3, 4))
    # Then the same seed gives the same weights, another seed others, and the global RNG did not move
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    assert not torch.equal(first.state_dict()["head.0.conv.weight"], other.state_dict()["head.0.conv.weight"])
    assert torch.equal(torch.get_rng_state(), before)


# -- Training ------------------------------------------------------------------------------------


def _held_out_style_loss(params: StyleTrainParams, net: TransformerNet) -> float:
    """The unweighted style loss of ``net``'s outputs on the held-out preview pictures."""
    encoder, _ = build_loss_encoder(params, InMemoryHooks(), device=torch.device("cpu"))
    with torch.no_grad():
        grams = [gram_targets(encoder(to_tensor(s, params.size)), params.style_layers) for s in _styles(params)]
        loss = StyleLoss(grams, params.blend(), params.style_layers, params.style_layer_weights, 1.0)
        return float(loss(encoder(stylize(net, preview_pictures(params.size)))))


def test_a_short_train_cuts_the_held_out_style_loss_at_least_fivefold(trained: Trained) -> None:
    # Given the network as training starts (the same seeded init) and the trained one from model.safetensors
    params = trained.params
    start = TransformerNet(width=params.width, residual_blocks=params.residual_blocks, seed=params.seed)
    end = load_model(trained.hooks.artifacts[MODEL_ARTIFACT][0])
    # When both style the held-out pictures, measured with the training's style loss against the style's Grams
    before, after = _held_out_style_loss(params, start), _held_out_style_loss(params, end)
    # Then the trained network's style loss is at least 5x lower
    assert before / after >= MIN_STYLE_DROP, (
        f"held-out style loss only fell {before / after:.1f}x ({before:g} -> {after:g})"
    )


def test_every_step_reports_the_four_losses_and_progress(trained: Trained) -> None:
    for step in range(1, TRAIN_STEPS + 1):
        values = {name: trained.hooks.metrics[(name, step)] for name in METRICS}
        assert values["total_loss"] == pytest.approx(
            values["content_loss"] + values["style_loss"] + values["tv_loss"], rel=1e-5
        )
    assert trained.hooks.progress == (TRAIN_STEPS, TRAIN_STEPS)
    assert trained.summary["final_metrics"] == {name: trained.hooks.metrics[(name, TRAIN_STEPS)] for name in METRICS}
    assert trained.hooks.warnings == [RANDOM_WEIGHTS_WARNING]


def test_the_run_saves_the_model_its_card_and_the_previews(trained: Trained) -> None:
    artifacts = trained.hooks.artifacts
    # Then the previews are exactly those of every PREVIEW_EVERY steps, and the final one
    previews = sorted(name for name in artifacts if name.startswith("previews/"))
    assert previews == [PREVIEW_ARTIFACT.format(step=s) for s in range(PREVIEW_EVERY, TRAIN_STEPS + 1, PREVIEW_EVERY)]
    assert previews == ["previews/step-000010.png", "previews/step-000020.png"]
    for name in [*previews, FINAL_PREVIEW_ARTIFACT]:
        data, kind, content_type = artifacts[name]
        assert (kind, content_type) == ("sample", "image/png")
        # a grid: the held-out pictures over their styled versions
        assert Image.open(io.BytesIO(data)).size[1] > 2 * TRAIN_SIZE
    # and the model and its card are outputs
    assert artifacts[MODEL_ARTIFACT][1:] == ("output", "application/octet-stream")
    data, kind, content_type = artifacts[CARD_ARTIFACT]
    assert (kind, content_type) == ("output", "application/json")
    card = json.loads(data)
    assert card["method"] == "johnson"
    assert card["styles"] == [STYLE] and card["blend"] == [1.0]
    assert card["final_metrics"] == trained.summary["final_metrics"]
    assert set(card["final_metrics"]) == set(METRICS)
    assert (card["width"], card["residual_blocks"], card["size"], card["steps"]) == (16, 2, TRAIN_SIZE, TRAIN_STEPS)
    assert card["params"] == trained.params.card()


def test_the_saved_model_styles_the_previews_exactly_as_the_final_preview_shows(trained: Trained) -> None:
    # Given the network loaded back from model.safetensors
    net = load_model(trained.hooks.artifacts[MODEL_ARTIFACT][0])
    assert (net.width, net.residual_blocks) == (16, 2)
    # When it styles the held-out pictures into the same grid
    pictures = preview_pictures(TRAIN_SIZE)
    grid = make_grid(torch.cat([pictures, stylize(net, pictures)]), nrow=len(pictures), padding=2)
    # Then the grid is byte for byte the final preview the run saved
    assert to_png(grid) == trained.hooks.artifacts[FINAL_PREVIEW_ARTIFACT][0]


def _resume_run(content: ContentSet) -> tuple[StyleTrainParams, Any]:
    params = _params(
        size=RESUME_SIZE,
        steps=RESUME_STEPS,
        checkpoint_every=RESUME_CHECKPOINT_EVERY,
        width=8,
        residual_blocks=1,
        batch_size=2,
        preview_every=None,
    )

    def run(hooks: InMemoryHooks) -> dict[str, Any]:
        return train_johnson(params, content, _styles(params), hooks)

    return params, run


def test_a_stopped_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(content: ContentSet) -> None:
    # Given an uninterrupted run that checkpoints every 3 of its 6 steps
    _, run = _resume_run(content)
    reference = InMemoryHooks()
    run(reference)
    assert [step for step, _ in reference.checkpoints] == [3, 6]
    # When the same run is stopped after step 4 and resumed on the same hooks
    resumed = stopped_and_resumed(run, stop_at=STOP_AT)
    # Then it checkpointed at 3 and at the stop, resumed from there, and ended bit-identical
    assert [step for step, _ in resumed.checkpoints] == [3, STOP_AT, 6]
    final, expected = (load_model(h.artifacts[MODEL_ARTIFACT][0]).state_dict() for h in (resumed, reference))
    assert final.keys() == expected.keys()
    for name in expected:
        assert torch.equal(final[name], expected[name]), name
    assert resumed.artifacts[MODEL_ARTIFACT][0] == reference.artifacts[MODEL_ARTIFACT][0]
    # and every step's metrics are the uninterrupted run's, each reported once
    assert resumed.metrics == reference.metrics
    assert sorted(resumed.metric_log) == sorted(reference.metric_log)
    assert json.loads(resumed.artifacts[CARD_ARTIFACT][0]) == json.loads(reference.artifacts[CARD_ARTIFACT][0])


def test_a_non_finite_loss_fails_with_divergence_error(content: ContentSet) -> None:
    # Given an infinite style weight (set past validation, which may well refuse it)
    params = _params(size=32, steps=3, preview_every=1, checkpoint_every=1)
    params = params.model_copy(update={"style_weight": float("inf")})
    hooks = InMemoryHooks()
    # When it trains, Then it fails at step 1 before persisting anything of the diverged network
    with pytest.raises(DivergenceError, match="diverged at step 1"):
        train_johnson(params, content, _styles(params), hooks)
    assert hooks.checkpoints == []
    assert hooks.artifacts == {}


def test_style_size_sets_the_scale_of_the_gram_targets(content: ContentSet) -> None:
    # Given one training step at 64 px crops, with the style picture at the crops' size and at 128 px
    def first_style_loss(**fields: Any) -> float:
        hooks = InMemoryHooks()
        train_johnson(_params(size=64, steps=1, preview_every=None, **fields), content, _styles(_params()), hooks)
        return hooks.metrics[("style_loss", 1)]

    same, unset, larger = first_style_loss(style_size=64), first_style_loss(), first_style_loss(style_size=128)
    # Then unset means the crops' size, and a larger style picture is another target (another loss)
    assert unset == pytest.approx(same, rel=1e-6)
    assert abs(larger - same) > 1e-3 * same
    # And the card records it
    assert _params(style_size=128).card()["style_size"] == 128


def test_the_number_of_style_pictures_must_match_the_params(content: ContentSet) -> None:
    params = _params(styles=[STYLE, "rocket"])
    with pytest.raises(ValueError, match="1 style images for 2 styles"):
        train_johnson(params, content, [load_builtin_image(STYLE)], InMemoryHooks())


# -- The model file ------------------------------------------------------------------------------


def test_model_bytes_round_trip_through_load_model() -> None:
    # Given a network of a non-default shape
    net = TransformerNet(width=12, residual_blocks=3, seed=7)
    images = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    # When it is saved and loaded back
    loaded = load_model(model_bytes(net))
    # Then it has the same shape and weights, and styles identically
    assert (loaded.width, loaded.residual_blocks) == (12, 3)
    assert torch.equal(stylize(loaded, images), stylize(net, images))


_unpickled: list[str] = []


def _record_unpickling() -> None:
    _unpickled.append("ran")


class _Booby:
    """Unpickling this calls _record_unpickling."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _without(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if key != name}


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"",
        lambda: b"definitely not a model",
        lambda: bytes(range(256)) * 4,
        lambda: _torch_saved(TransformerNet(width=8, residual_blocks=1).state_dict()),
        lambda: _torch_saved({"x": _Booby()}),
        lambda: pickle.dumps(_Booby()),
        lambda: save_safetensors({"weight": torch.zeros(2, 2)}),
        lambda: save_safetensors(
            _without(TransformerNet(width=8, residual_blocks=1).state_dict(), "res.0.body.0.conv.bias")
        ),
        lambda: save_safetensors(
            {k: v.to(torch.int32) for k, v in TransformerNet(width=8, residual_blocks=1).state_dict().items()}
        ),
    ],
    ids=["empty", "text", "noise", "torch-save", "torch-save-reducer", "pickle", "other-tensors", "missing", "ints"],
)
def test_load_model_refuses_anything_but_a_safetensors_transformer_net(make: Any) -> None:
    # Given bytes that are not a safetensors TransformerNet (pickles among them)
    data = make()
    # When they are loaded, Then a named ValueError says so, and nothing was unpickled
    with pytest.raises(ValueError, match="not a style model"):
        load_model(data)
    assert _unpickled == []


# -- Content sets ----------------------------------------------------------------------------


def test_builtin_content_trains_on_the_bundled_pictures_but_never_the_preview_pictures(content: ContentSet) -> None:
    # Given the held-out preview pictures
    held_out = [np.asarray(load_builtin_image(name)) for name in PREVIEW_IMAGES]
    # Then none of the training pictures is one of them
    for picture in content.pictures:
        pixels = np.asarray(picture)
        assert not any(p.shape == pixels.shape and np.array_equal(p, pixels) for p in held_out)
    # and the set holds every other built-in picture plus the shapes mosaics
    assert set(TRAIN_IMAGES).isdisjoint(PREVIEW_IMAGES)
    assert len(content) == len(TRAIN_IMAGES) + SHAPE_MOSAICS
    # and the previews are those pictures' centre squares at the asked size
    previews = preview_pictures(64)
    assert previews.shape == (len(PREVIEW_IMAGES), 3, 64, 64)
    assert float(previews.min()) >= 0.0 and float(previews.max()) <= 1.0


def test_a_batch_is_a_pure_function_of_seed_and_step(content: ContentSet) -> None:
    # Given the global RNG's state and a second, fresh content set
    before = torch.get_rng_state()
    fresh = builtin_content()
    # When batches are drawn for some (seed, step)s
    first = content.batch(3, batch_size=4, size=32, seed=0)
    # Then the same (seed, step) gives the same crops, another step or seed others
    assert first.shape == (4, 3, 32, 32) and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(fresh.batch(3, batch_size=4, size=32, seed=0), first)
    assert not torch.equal(content.batch(4, batch_size=4, size=32, seed=0), first)
    assert not torch.equal(content.batch(3, batch_size=4, size=32, seed=1), first)
    # and the global RNG did not move
    assert torch.equal(torch.get_rng_state(), before)


def test_uploaded_photos_make_a_content_set_even_when_smaller_than_the_crops() -> None:
    # Given one small photo (smaller than the crop size)
    photo = Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3))
    # When it becomes a content set, Then its batches have the asked size
    batch = content_from_images([photo]).batch(1, batch_size=2, size=48, seed=0)
    assert batch.shape == (2, 3, 48, 48)


def test_an_empty_upload_is_refused() -> None:
    with pytest.raises(ValueError, match="no pictures"):
        content_from_images([])
