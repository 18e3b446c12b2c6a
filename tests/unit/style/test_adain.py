"""style.train (adain): AdaIN itself, the decoder, the training loop driven by in-memory hooks (reconstruction,
alpha, style interpolation, resume, divergence, artifacts) and the safetensors model file with its dispatch.

Each test reads Given / When / Then."""

from __future__ import annotations

import io
import itertools
import json
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from skimage.metrics import structural_similarity
from torch import nn
from torchvision.utils import make_grid

from shared.jobs.style_train import StyleTrainParams
from tests.support.resume import stopped_and_resumed
from workers.hooks import InMemoryHooks
from workers.style.adain import (
    ENCODER_LAYERS,
    AdainModel,
    Decoder,
    adain,
    adain_model_bytes,
    load_adain_model,
    mean_std,
    style_statistics_loss,
    stylize_adain,
    train_adain,
)
from workers.style.content import ContentSet, builtin_content, preview_pictures
from workers.style.images import load_builtin_image, to_png, to_tensor
from workers.style.johnson import (
    CARD_ARTIFACT,
    FINAL_PREVIEW_ARTIFACT,
    METADATA_KEY,
    MODEL_ARTIFACT,
    PREVIEW_ARTIFACT,
    TransformerNet,
    model_bytes,
)
from workers.style.model_file import HEADER_LENGTH_BYTES, load_style_model, model_about, model_method
from workers.style.transfer import RANDOM_WEIGHTS_WARNING
from workers.style.vgg import build_vgg
from workers.training import DivergenceError

pytestmark = pytest.mark.timeout(120)

STYLE = "coffee"
OTHER_STYLE = "rocket"
TRAIN_SIZE = 32
TRAIN_STEPS = 100
PREVIEW_EVERY = 50
# The paper's decoder at a quarter width, VGG19 with random weights, the paper's two losses (content, style):
# about 0.1 s a step on one busy core.
TRAIN = {"width": 16, "batch_size": 2, "lr": 1e-3, "network": "vgg19", "content_weight": 1.0, "style_weight": 1.0}
RESUME_STEPS = 6
RESUME_CHECKPOINT_EVERY = 3
STOP_AT = 4
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
ALPHA_TOLERANCE = 0.02  # relative: a larger alpha's style loss may exceed a smaller one's by this much at most
MIN_ALPHA_STYLE_DROP = 2.0  # style loss at alpha 0 / at alpha 1
METRICS = ("content_loss", "style_loss", "total_loss")
PAPER_WIDTH = 64


def _params(**overrides: Any) -> StyleTrainParams:
    """The training defaults, one style, random VGG weights and the small decoder."""
    fields: dict[str, Any] = {"styles": [STYLE], "weights": "random", "checkpoint_every": 10_000, **TRAIN}
    return StyleTrainParams.model_validate(fields | overrides)


def _style_set(params: StyleTrainParams) -> ContentSet:
    return ContentSet([load_builtin_image(name) for name in params.styles])


def _picture(name: str, size: int) -> torch.Tensor:
    return to_tensor(load_builtin_image(name), size)  # 1 x 3 x h x w


@pytest.fixture(scope="module")
def content() -> ContentSet:
    """The built-in content set, built once for the module."""
    return builtin_content()


@pytest.fixture(scope="module")
def untrained() -> AdainModel:
    """A random VGG19 encoder and a fresh narrow decoder."""
    encoder = build_vgg("vgg19", "random", seed=0, layers=ENCODER_LAYERS)
    return AdainModel(encoder=encoder, decoder=Decoder(width=8), network="vgg19", pooling="max").eval()


@dataclass
class Trained:
    params: StyleTrainParams
    hooks: InMemoryHooks
    summary: dict[str, Any]
    model: AdainModel  # loaded back from model.safetensors


@pytest.fixture(scope="module")
def trained(content: ContentSet) -> Trained:
    """One uninterrupted run of TRAIN_STEPS steps at TRAIN_SIZE px with previews every PREVIEW_EVERY steps."""
    params = _params(size=TRAIN_SIZE, steps=TRAIN_STEPS, preview_every=PREVIEW_EVERY)
    hooks = InMemoryHooks()
    summary = train_adain(params, content, _style_set(params), hooks)
    return Trained(params, hooks, summary, load_adain_model(hooks.artifacts[MODEL_ARTIFACT][0]))


# -- AdaIN ---------------------------------------------------------------------------------------------


def test_adain_gives_each_sample_its_styles_channel_statistics_and_keeps_the_normalised_content() -> None:
    # Given content and style features of different shapes, scales and shifts, two samples each
    generator = torch.Generator().manual_seed(0)
    content = torch.randn(2, 8, 5, 7, generator=generator) * 3.0 + 1.0
    style = torch.randn(2, 8, 6, 4, generator=generator) * torch.rand(2, 8, 1, 1, generator=generator) * 4.0 - 2.0
    # When AdaIN combines them
    out = adain(content, style)
    # Then every sample and channel has its style's mean and standard deviation
    assert out.shape == content.shape
    out_mean, out_std = mean_std(out, eps=0.0)
    style_mean, style_std = mean_std(style, eps=0.0)
    torch.testing.assert_close(out_mean, style_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_std, style_std, atol=1e-3, rtol=1e-3)
    # and normalised, it is the normalised content
    content_mean, content_std = mean_std(content, eps=0.0)
    torch.testing.assert_close((out - out_mean) / out_std, (content - content_mean) / content_std, atol=1e-4, rtol=1e-4)
    # and each sample takes its own style's statistics: one style picture for the batch broadcasts
    swapped = adain(content, style.flip(0))
    torch.testing.assert_close(swapped[0], adain(content[:1], style[1:])[0])
    torch.testing.assert_close(adain(content, style[:1]), adain(content, style[:1].expand(2, -1, -1, -1)))


def test_the_paper_style_loss_is_zero_for_equal_statistics_and_grows_with_a_shift() -> None:
    # Given features at the four style layers
    feats = {layer: torch.rand(1, 4, 6, 6, generator=torch.Generator().manual_seed(1)) for layer in ENCODER_LAYERS}
    shifted = {layer: value + 0.5 for layer, value in feats.items()}
    # Then the loss of equal statistics is 0 and a shift of 0.5 in every mean costs 0.25 a layer
    assert float(style_statistics_loss(feats, feats)) == 0.0
    assert float(style_statistics_loss(shifted, feats)) == pytest.approx(0.25 * len(ENCODER_LAYERS), rel=1e-5)


# -- The decoder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(32, 32), (48, 40), (16, 24)])
def test_the_decoder_mirrors_the_encoder_back_to_the_pictures_size(
    untrained: AdainModel, height: int, width: int
) -> None:
    # Given a picture whose sides are multiples of 8 (the encoder's three poolings), 16 or more
    picture = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(2))
    # When it is encoded to relu4_1 and decoded
    with torch.no_grad():
        feats = untrained.encode(picture)
        decoded = untrained.decode(feats)
    # Then the features are 512 channels at an eighth of the size, and the decoder gives the picture's shape back
    assert feats.shape == (1, 512, height // 8, width // 8)
    assert decoded.shape == picture.shape


@pytest.mark.parametrize(("height", "width"), [(33, 47), (31, 16), (7, 5), (2, 3)])
def test_applying_keeps_the_size_of_any_picture_even_or_odd(untrained: AdainModel, height: int, width: int) -> None:
    # Given a picture of sides that are not multiples of 8 (some tiny)
    picture = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3))
    # When it is styled (padded to a multiple of 8, decoded, cropped back)
    styled = stylize_adain(untrained, picture, [_picture(STYLE, 24)])
    # Then the output has the picture's shape, in [0, 1]
    assert styled.shape == picture.shape
    assert float(styled.min()) >= 0.0 and float(styled.max()) <= 1.0


def test_the_decoder_is_the_papers_mirror_of_vgg19_up_to_relu4_1() -> None:
    # Given the decoder at the paper's width
    modules = list(Decoder(width=PAPER_WIDTH).modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    # Then it has VGG19's nine 3x3 convolutions up to relu4_1 in reverse: 512 -> 256 -> 128 -> 64 -> 3
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (512, 256), (256, 256), (256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64), (64, 3),
    ]  # fmt: skip
    assert all(c.kernel_size == (3, 3) and c.padding == (0, 0) for c in convs)
    # with reflection padding, three nearest 2x upsamplings for the three poolings, and no normalisation
    kinds = {type(m) for m in modules}
    assert nn.ReflectionPad2d in kinds and not kinds & {nn.InstanceNorm2d, nn.BatchNorm2d, nn.ConvTranspose2d}
    upsamples = [m for m in modules if isinstance(m, nn.Upsample)]
    assert [(u.scale_factor, u.mode) for u in upsamples] == [(2.0, "nearest")] * 3
    # and the default width (32) halves every inner layer
    assert [c.out_channels for c in Decoder(width=32).modules() if isinstance(c, nn.Conv2d)][:1] == [128]


def test_the_decoder_init_is_a_function_of_its_seed_and_leaves_the_global_rng_alone() -> None:
    # Given the global RNG's state
    before = torch.get_rng_state()
    # When two decoders of one seed and one of another are built
    first, again, other = (Decoder(width=8, seed=s) for s in (3, 3, 4))
    # Then the same seed gives the same weights, another seed others, and the global RNG did not move
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))
    assert not torch.equal(first.state_dict()["body.0.conv.weight"], other.state_dict()["body.0.conv.weight"])
    assert torch.equal(torch.get_rng_state(), before)


# -- Training ------------------------------------------------------------------------------------------


def _mean_ssim(model: AdainModel, pictures: torch.Tensor, style: torch.Tensor) -> float:
    """Mean SSIM of ``pictures`` and their alpha-0 outputs (the decoder's reconstruction of their features)."""
    scores = []
    for picture in pictures:
        out = stylize_adain(model, picture[None], [style], alpha=0.0)[0]
        scores.append(
            structural_similarity(
                picture.permute(1, 2, 0).numpy(), out.permute(1, 2, 0).numpy(), channel_axis=2, data_range=1.0
            )
        )
    return float(np.mean(scores))


MIN_RECONSTRUCTION_SSIM = 0.3  # a recognisable reconstruction of a 32 px picture (an 8x blur of it scores 0.13-0.23)


@pytest.mark.xfail(
    strict=True,
    reason="not met: from relu4_1 of a random VGG19 a 100-step decoder gives alpha-0 outputs of SSIM about 0.0 "
    "(untrained: about -0.01); even optimising the pixels themselves reaches 0.05 (max pooling) to 0.2 (avg), "
    "and adding a pixel identity loss (SANet's, weight 100) to the paper's two reaches only 0.13 after 400 steps "
    "(2026-11-30): the paper's reconstruction assumes ImageNet VGG weights, which cannot be downloaded here",
)
def test_a_short_training_reconstructs_the_held_out_content_at_alpha_0(trained: Trained) -> None:
    # Given the trained model and the same model with its decoder as training started (the same seeded init)
    params = trained.params
    start = load_adain_model(trained.hooks.artifacts[MODEL_ARTIFACT][0])
    start.decoder.load_state_dict(Decoder(width=params.width, seed=params.seed).state_dict())
    pictures, style = preview_pictures(TRAIN_SIZE), _picture(STYLE, TRAIN_SIZE)
    # When both decode the held-out pictures' own features (alpha 0)
    before, after = _mean_ssim(start, pictures, style), _mean_ssim(trained.model, pictures, style)
    # Then the trained decoder's output is close to the pictures by SSIM, and the untrained one's is not
    assert before < MIN_RECONSTRUCTION_SSIM <= after, f"SSIM untrained {before:.3f}, trained {after:.3f}"


def _style_losses(model: AdainModel, pictures: torch.Tensor, style: torch.Tensor) -> list[float]:
    """Per alpha, the mean over ``pictures`` of the paper's style loss of the output against ``style``."""
    with torch.no_grad():
        targets = model.features(style)
        return [
            float(
                np.mean(
                    [
                        float(
                            style_statistics_loss(
                                model.features(stylize_adain(model, p[None], [style], alpha=a)), targets
                            )
                        )
                        for p in pictures
                    ]
                )
            )
            for a in ALPHAS
        ]


def test_alpha_orders_the_outputs_style_loss(trained: Trained) -> None:
    # Given the trained model, the held-out pictures and the style
    pictures, style = preview_pictures(TRAIN_SIZE), _picture(STYLE, TRAIN_SIZE)
    # When they are styled at alphas 0, 0.25, ..., 1
    losses = _style_losses(trained.model, pictures, style)
    # Then the outputs' style loss falls as alpha grows (within a small tolerance), and at least twofold in all
    table = dict(zip(ALPHAS, losses, strict=True))
    for smaller, larger in itertools.pairwise(losses):
        assert larger <= smaller * (1.0 + ALPHA_TOLERANCE), table
    assert losses[0] / losses[-1] >= MIN_ALPHA_STYLE_DROP, table


def test_style_weights_interpolate_between_styles(trained: Trained) -> None:
    # Given a held-out picture and two style pictures
    picture = preview_pictures(TRAIN_SIZE)[:1]
    first, second = _picture(STYLE, TRAIN_SIZE), _picture(OTHER_STYLE, TRAIN_SIZE)
    model = trained.model
    # When it is styled with each alone, with weights [1, 0] and [0, 2], and half and half
    alone, other = stylize_adain(model, picture, [first]), stylize_adain(model, picture, [second])
    only_first = stylize_adain(model, picture, [first, second], weights=[1.0, 0.0])
    only_second = stylize_adain(model, picture, [first, second], weights=[0.0, 2.0])
    half = stylize_adain(model, picture, [first, second], weights=[1.0, 1.0])
    # Then a zero weight drops a style exactly, and mixing gives a third picture
    assert torch.equal(only_first, alone)
    assert torch.equal(only_second, other)
    assert not torch.equal(alone, other)
    assert float((half - alone).abs().mean()) > 1e-3 and float((half - other).abs().mean()) > 1e-3
    # and default weights are equal ones
    assert torch.equal(stylize_adain(model, picture, [first, second]), half)
    with pytest.raises(ValueError, match="style weights"):
        stylize_adain(model, picture, [first, second], weights=[1.0])


def test_every_step_reports_the_three_losses_and_progress(trained: Trained) -> None:
    for step in range(1, TRAIN_STEPS + 1):
        values = {name: trained.hooks.metrics[(name, step)] for name in METRICS}
        assert values["total_loss"] == pytest.approx(values["content_loss"] + values["style_loss"], rel=1e-5)
    assert ("tv_loss", 1) not in trained.hooks.metrics
    assert trained.hooks.progress == (TRAIN_STEPS, TRAIN_STEPS)
    assert trained.summary["final_metrics"] == {name: trained.hooks.metrics[(name, TRAIN_STEPS)] for name in METRICS}
    assert trained.hooks.warnings == [RANDOM_WEIGHTS_WARNING]


def test_the_run_saves_the_model_its_card_and_the_previews(trained: Trained) -> None:
    artifacts = trained.hooks.artifacts
    # Then the previews are exactly those of every PREVIEW_EVERY steps, and the final one
    previews = sorted(name for name in artifacts if name.startswith("previews/"))
    assert previews == [PREVIEW_ARTIFACT.format(step=s) for s in range(PREVIEW_EVERY, TRAIN_STEPS + 1, PREVIEW_EVERY)]
    assert previews == ["previews/step-000050.png", "previews/step-000100.png"]
    for name in [*previews, FINAL_PREVIEW_ARTIFACT]:
        data, kind, content_type = artifacts[name]
        assert (kind, content_type) == ("sample", "image/png")
        assert Image.open(io.BytesIO(data)).size[1] > 2 * TRAIN_SIZE  # the pictures over their styled versions
    # and the model and its card are outputs
    assert artifacts[MODEL_ARTIFACT][1:] == ("output", "application/octet-stream")
    data, kind, content_type = artifacts[CARD_ARTIFACT]
    assert (kind, content_type) == ("output", "application/json")
    card = json.loads(data)
    assert card["method"] == "adain"
    assert card["styles"] == [STYLE]
    assert card["final_metrics"] == trained.summary["final_metrics"]
    assert set(card["final_metrics"]) == set(METRICS)
    assert (card["width"], card["size"], card["steps"], card["network"]) == (16, TRAIN_SIZE, TRAIN_STEPS, "vgg19")
    assert card["encoder_layers"] == list(ENCODER_LAYERS)
    assert card["params"] == trained.params.card()


def test_the_saved_model_styles_the_previews_exactly_as_the_final_preview_shows(trained: Trained) -> None:
    # Given the model loaded back from model.safetensors
    model = trained.model
    # When it styles the held-out pictures with the first style picture into the same grid
    pictures, style = preview_pictures(TRAIN_SIZE), _picture(STYLE, TRAIN_SIZE)
    styled = torch.cat([stylize_adain(model, p[None], [style]) for p in pictures])
    grid = make_grid(torch.cat([pictures, styled]), nrow=len(pictures), padding=2)
    # Then the grid is byte for byte the final preview the run saved
    assert to_png(grid) == trained.hooks.artifacts[FINAL_PREVIEW_ARTIFACT][0]


def test_a_stopped_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(content: ContentSet) -> None:
    # Given an uninterrupted run that checkpoints every 3 of its 6 steps
    params = _params(
        size=TRAIN_SIZE,
        steps=RESUME_STEPS,
        checkpoint_every=RESUME_CHECKPOINT_EVERY,
        width=8,
        batch_size=1,
        preview_every=None,
    )

    def run(hooks: InMemoryHooks) -> dict[str, Any]:
        return train_adain(params, content, _style_set(params), hooks)

    reference = InMemoryHooks()
    run(reference)
    assert [step for step, _ in reference.checkpoints] == [3, 6]
    # When the same run is stopped after step 4 and resumed on the same hooks
    resumed = stopped_and_resumed(run, stop_at=STOP_AT)
    # Then it checkpointed at 3 and at the stop, resumed from there, and ended bit-identical
    assert [step for step, _ in resumed.checkpoints] == [3, STOP_AT, 6]
    final, expected = (
        load_adain_model(h.artifacts[MODEL_ARTIFACT][0]).decoder.state_dict() for h in (resumed, reference)
    )
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
    params = _params(size=TRAIN_SIZE, steps=3, width=8, batch_size=1, preview_every=1, checkpoint_every=1)
    params = params.model_copy(update={"style_weight": float("inf")})
    hooks = InMemoryHooks()
    # When it trains, Then it fails at step 1 before persisting anything of the diverged decoder
    with pytest.raises(DivergenceError, match="diverged at step 1"):
        train_adain(params, content, _style_set(params), hooks)
    assert hooks.checkpoints == []
    assert hooks.artifacts == {}


def test_the_style_set_holds_at_least_a_picture_per_named_style(content: ContentSet) -> None:
    # an upload among params.styles brings all of its pictures, so the set may be larger, never smaller
    params = _params(styles=[STYLE, OTHER_STYLE])
    with pytest.raises(ValueError, match="got 1 style pictures for the 2 styles"):
        train_adain(params, content, ContentSet([load_builtin_image(STYLE)]), InMemoryHooks())


# -- The model file --------------------------------------------------------------------------------------


def _header(data: bytes) -> tuple[int, dict[str, Any]]:
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    return length, json.loads(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])


def test_the_model_file_holds_encoder_and_decoder_tensors_and_a_description_only(trained: Trained) -> None:
    # Given the saved model file
    data = trained.hooks.artifacts[MODEL_ARTIFACT][0]
    length, header = _header(data)
    # Then its metadata is one sorted JSON description
    metadata = header.pop("__metadata__")
    assert list(metadata) == [METADATA_KEY]
    about = json.loads(metadata[METADATA_KEY])
    assert metadata[METADATA_KEY] == json.dumps(about, sort_keys=True)
    assert about == {
        "format": "atelier.adain.v1",
        "method": "adain",
        "width": 16,
        "network": "vgg19",
        "pooling": "max",
        "encoder_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
    }
    assert model_about(data) == about
    # and the rest is raw tensors, the encoder's (VGG19 up to conv4_1) and the decoder's, tiling the data exactly
    assert {name.split(".")[0] for name in header} == {"encoder", "decoder"}
    assert "encoder.body.conv4_1.weight" in header and not any("conv4_2" in name for name in header)
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - HEADER_LENGTH_BYTES - length
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))
    assert {entry["dtype"] for entry in header.values()} == {"F32"}


def test_the_model_file_round_trips_to_identical_outputs(trained: Trained) -> None:
    # Given a model loaded back from its own file
    again = load_adain_model(adain_model_bytes(trained.model))
    picture = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(4))
    # Then its tensors and outputs are the same, and saving it again gives the same bytes
    for name, value in trained.model.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name
    styles = [_picture(STYLE, 24), _picture(OTHER_STYLE, 40)]
    for alpha in (0.5, 1.0):
        assert torch.equal(
            stylize_adain(again, picture, styles, weights=[0.3, 0.7], alpha=alpha),
            stylize_adain(trained.model, picture, styles, weights=[0.3, 0.7], alpha=alpha),
        )
    assert adain_model_bytes(again) == trained.hooks.artifacts[MODEL_ARTIFACT][0]


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


def _resaved(data: bytes, *, about: dict[str, Any] | None = None, drop: str | None = None, ints: bool = False) -> bytes:
    """An adain model file with its description, one tensor or its dtypes changed."""
    state = {name: value for name, value in load_safetensors(data).items() if name != drop}
    if ints:
        state = {name: value.to(torch.int32) for name, value in state.items()}
    description = about if about is not None else model_about(data)
    return save_safetensors(state, metadata={METADATA_KEY: json.dumps(description, sort_keys=True)})


@pytest.fixture(scope="module")
def small_adain_file(untrained: AdainModel) -> bytes:
    """The untrained model's file: a valid adain model file to spoil."""
    return adain_model_bytes(untrained)


BAD_FILES = {
    "empty": lambda good: b"",
    "text": lambda good: b"definitely not a model",
    "noise": lambda good: bytes(range(256)) * 4,
    "huge-header": lambda good: (2**62).to_bytes(8, "little") + b"{}",
    "torch-save": lambda good: _torch_saved(Decoder(width=8).state_dict()),
    "torch-save-reducer": lambda good: _torch_saved({"x": _Booby()}),
    "pickle": lambda good: pickle.dumps(_Booby()),
    "no-metadata": lambda good: save_safetensors({"weight": torch.zeros(2, 2)}),
    "johnson": lambda good: model_bytes(TransformerNet(width=8, residual_blocks=1)),
    "missing": lambda good: _resaved(good, drop="decoder.body.0.conv.bias"),
    "ints": lambda good: _resaved(good, ints=True),
    "width": lambda good: _resaved(good, about=model_about(good) | {"width": 4096}),
    "other-width": lambda good: _resaved(good, about=model_about(good) | {"width": 16}),
    "network": lambda good: _resaved(good, about=model_about(good) | {"network": "vgg16"}),
    "layers": lambda good: _resaved(good, about=model_about(good) | {"encoder_layers": ["relu5_1"]}),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_load_adain_model_refuses_anything_but_an_adain_model_file(small_adain_file: bytes, name: str) -> None:
    # Given bytes that are not a safetensors AdaIN model (pickles among them)
    data = BAD_FILES[name](small_adain_file)
    # When they are loaded, Then a named ValueError says so, and nothing was unpickled
    with pytest.raises(ValueError, match="not a style model"):
        load_adain_model(data)
    assert _unpickled == []


def test_the_model_file_says_its_method_and_loads_with_its_methods_loader(small_adain_file: bytes) -> None:
    # Given a johnson model file and an adain one
    johnson = model_bytes(TransformerNet(width=8, residual_blocks=1))
    # Then each names its method in its header, and load_style_model builds that network
    assert model_method(johnson) == "johnson" and model_method(small_adain_file) == "adain"
    method, net = load_style_model(johnson)
    assert method == "johnson" and isinstance(net, TransformerNet)
    method, model = load_style_model(small_adain_file)
    assert method == "adain" and isinstance(model, AdainModel) and model.width == 8
    # and anything else is refused by name, without unpickling
    for data in (b"", pickle.dumps(_Booby()), _torch_saved({"x": _Booby()}), save_safetensors({"w": torch.ones(1)})):
        with pytest.raises(ValueError, match="not a style model"):
            model_method(data)
    with pytest.raises(ValueError, match="unknown method 'gatys'"):
        load_style_model(_resaved(small_adain_file, about={"method": "gatys"}))
    assert _unpickled == []
