"""gan.train params: backward-compatible defaults, presets, and nonsense combinations refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.api.submit import describe_validation_error
from shared.jobs.gan_sample import GanSampleParams
from shared.jobs.gan_train import GAN_PRESETS, GanTrainParams
from shared.jobs.style_transfer import StyleTransferParams

# The params as they were before arch, losses and remedies existed: same meaning, same defaults.
ORIGINAL_DEFAULTS = {
    "dataset": "digits",
    "image_size": 32,
    "channels": None,
    "steps": 2000,
    "batch_size": 64,
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "nz": 100,
    "ngf": 64,
    "ndf": 64,
    "seed": 0,
    "log_every": 1,
    "checkpoint_every": 100,
    "sample_every": 100,
}
REMEDIES_OFF = {
    "loss": "bce",
    "r1_gamma": 0.0,
    "n_critic": 1,
    "label_smoothing": 0.0,
    "spectral_norm": False,
    "ema": None,
    "d_skip_threshold": None,
    "diffaugment": [],
    "lr_decay": "none",
}


def test_defaults_keep_the_original_dcgan_with_no_remedy() -> None:
    params = GanTrainParams()
    dumped = params.model_dump()
    assert {k: dumped[k] for k in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS
    assert {k: dumped[k] for k in REMEDIES_OFF} == REMEDIES_OFF
    assert (params.arch, params.preset, params.points) == ("dcgan", None, False)


def test_point_datasets_default_to_the_dense_gan() -> None:
    for dataset in ("ring8", "grid25"):
        params = GanTrainParams(dataset=dataset)
        assert (params.arch, params.points) == ("mlp", True)
    assert GanTrainParams(arch="mlp").arch == "mlp"  # the lesson's dense GAN on images, too


def test_the_stable_preset_on_points_uses_the_point_settings() -> None:
    ring = GanTrainParams(preset="stable", dataset="ring8")
    assert (ring.lr_g, ring.lr_d, ring.spectral_norm, ring.ema, ring.lr_decay) == (5e-4, 5e-4, False, 0.999, "linear")
    assert (ring.nz, ring.ngf, ring.ndf) == (2, 32, 32)  # latent 2, half the width
    assert (ring.g_batchnorm, ring.pack) == (False, 2)  # G without batch norm, D judging pairs
    grid = GanTrainParams(preset="stable", dataset="grid25")
    assert (grid.lr_g, grid.lr_d, grid.ema, grid.lr_decay, grid.nz, grid.ngf) == (5e-4, 5e-4, 0.999, "linear", 2, 32)
    assert (grid.g_batchnorm, grid.pack) == (False, 1)  # packing cost modes on grid25
    assert GanTrainParams(preset="stable", dataset="ring8", spectral_norm=True).spectral_norm is True
    mine = GanTrainParams(preset="stable", dataset="grid25", nz=100, ngf=64)
    assert (mine.nz, mine.ngf, mine.ndf) == (100, 64, 32)  # what the caller gives wins, field by field
    lesson = GanTrainParams(preset="lesson", dataset="ring8")
    assert (lesson.lr_g, lesson.nz, lesson.ngf, lesson.ndf, lesson.g_batchnorm) == (2e-4, 100, 64, 64, True)
    images = GanTrainParams(preset="stable", dataset="digits")
    assert (images.nz, images.ngf, images.ndf, images.g_batchnorm) == (100, 64, 64, True)  # points only


def test_presets_carry_the_budget_of_their_documented_figures() -> None:
    # Given a preset and a dataset only, Then the steps and batch of docs/benchmarks.md's figures are filled in
    for preset in ("stable", "lesson"):
        assert (
            GanTrainParams(preset=preset, dataset="ring8").steps,
            GanTrainParams(preset=preset, dataset="ring8").batch_size,
        ) == (16000, 128)
        assert GanTrainParams(preset=preset, dataset="grid25").steps == 48000
        assert (GanTrainParams(preset=preset, dataset="digits").steps, GanTrainParams(preset=preset).batch_size) == (
            4000,
            64,
        )
    # And a long budget spreads its grids and checkpoints within their limits
    grid = GanTrainParams(preset="stable", dataset="grid25")
    assert grid.steps // grid.sample_every <= 500 and grid.steps // grid.checkpoint_every <= 1000
    # And steps or batch given explicitly win; with no preset the plain defaults stand
    assert GanTrainParams(preset="stable", dataset="grid25", batch_size=32).batch_size == 32
    assert (GanTrainParams(dataset="grid25").steps, GanTrainParams(dataset="grid25").batch_size) == (2000, 64)


def test_stable_adds_r1_on_images_where_the_run_can_take_it() -> None:
    # Given the stable preset on images: R1 0.1 on D's gradient at the real images (docs/benchmarks.md,
    # "Class coverage on digits")
    assert GanTrainParams(preset="stable", dataset="digits").r1_gamma == 0.1
    assert GanTrainParams(preset="stable", dataset="shapes", arch="mlp").r1_gamma == 0.1
    # But not on the point sets (measured without it), nor where it cannot run, which would make the preset a 422
    assert GanTrainParams(preset="stable", dataset="ring8").r1_gamma == 0.0
    assert GanTrainParams(preset="stable", dataset="grid25").r1_gamma == 0.0
    assert GanTrainParams(preset="stable", arch="progressive", image_size=64).r1_gamma == 0.0
    assert GanTrainParams(preset="stable", compile=True).r1_gamma == 0.0
    assert GanTrainParams(preset="stable", loss="wgan-gp").r1_gamma == 0.0
    # And a caller's own value wins; the lesson preset has none
    assert GanTrainParams(preset="stable", r1_gamma=1.0).r1_gamma == 1.0
    assert GanTrainParams(preset="lesson").r1_gamma == 0.0


def test_the_lesson_preset_adds_nothing() -> None:
    lesson = GanTrainParams(preset="lesson").model_dump()
    assert {k: lesson[k] for k in REMEDIES_OFF} == REMEDIES_OFF
    assert (lesson["lr_g"], lesson["lr_d"], lesson["beta1"]) == (2e-4, 2e-4, 0.5)


def test_a_preset_fills_only_what_the_caller_left_unset() -> None:
    stable = GanTrainParams(preset="stable")
    for key, value in GAN_PRESETS["stable"].items():
        assert getattr(stable, key) == value, key
    assert stable.model_dump() != GanTrainParams(preset="lesson").model_dump()
    mine = GanTrainParams(preset="stable", ema=None, lr_d=1e-3)
    assert (mine.ema, mine.lr_d, mine.spectral_norm) == (None, 1e-3, GAN_PRESETS["stable"]["spectral_norm"])


@pytest.mark.parametrize("values", [{}, {"preset": "stable", "dataset": "ring8"}, {"preset": "lesson", "arch": "mlp"}])
def test_the_worker_parses_what_the_api_stored(values: dict[str, Any]) -> None:
    params = GanTrainParams(**values)
    assert GanTrainParams.model_validate(params.model_dump(mode="json")) == params


@pytest.mark.parametrize(
    ("values", "field", "needle"),
    [
        ({"dataset": "ring8", "arch": "dcgan"}, "params.arch", "use arch 'mlp'"),
        ({"dataset": "grid25", "image_size": 64}, "params.image_size", "leave image_size unset"),
        ({"dataset": "ring8", "channels": 3}, "params.channels", "leave channels unset"),
        ({"dataset": "ring8", "diffaugment": ["translation"]}, "params.diffaugment", "images only"),
        ({"loss": "hinge", "label_smoothing": 0.1}, "params.label_smoothing", "bce loss"),
        ({"loss": "wgan-gp", "d_skip_threshold": 0.1}, "params.d_skip_threshold", "bounded below"),
        ({"diffaugment": ["color", "color"]}, "params.diffaugment", "twice"),
        ({"diffaugment": ["rotate"]}, "params.diffaugment.0", "'color', 'translation' or 'cutout'"),
        ({"preset": "best"}, "params.preset", "'lesson' or 'stable'"),
        ({"loss": "lsgan"}, "params.loss", "'bce', 'hinge' or 'wgan-gp'"),
        ({"arch": "resnet"}, "params.arch", "'dcgan', 'mlp', 'progressive' or 'msg'"),
        ({"ema": 1.0}, "params.ema", "less than 1"),
        ({"n_critic": 0}, "params.n_critic", "greater than or equal to 1"),
        ({"label_smoothing": 0.5}, "params.label_smoothing", "less than 0.5"),
        ({"r1_gamma": -1}, "params.r1_gamma", "greater than or equal to 0"),
        ({"d_skip_threshold": 0}, "params.d_skip_threshold", "greater than 0"),
        ({"g_batchnorm": False}, "params.g_batchnorm", "dense GAN (arch 'mlp'), not 'dcgan'"),
        ({"g_batchnorm": "sometimes"}, "params.g_batchnorm", "valid boolean"),
        ({"pack": 3}, "params.pack", "pack 3 must divide batch_size 64"),
        ({"pack": 2, "arch": "msg"}, "params.pack", "not arch 'msg'"),
        ({"pack": 2, "dataset": "digits", "conditional": True}, "params.pack", "not conditional training"),
        ({"pack": 0}, "params.pack", "greater than or equal to 1"),
        ({"pack": 9}, "params.pack", "less than or equal to 8"),
    ],
)
def test_nonsense_is_refused_naming_the_field(values: dict[str, Any], field: str, needle: str) -> None:
    # Given params the API would receive; When they are validated as the API does
    with pytest.raises(ValidationError) as raised:
        GanTrainParams(**values)
    error = describe_validation_error(raised.value, prefix="params")
    # Then the error is a 422 naming the field, with a message that says why
    assert (error.status_code, error.field) == (422, field)
    assert needle in error.message


def test_the_stable_preset_leaves_diffaugment_off_where_the_arch_cannot_take_it() -> None:
    assert GanTrainParams(preset="stable").diffaugment == ["translation", "cutout"]
    for arch in ("progressive", "msg"):
        # Given stable with a multi-scale arch, which takes no DiffAugment; Then it validates, EMA on, no DiffAugment
        params = GanTrainParams(preset="stable", arch=arch, image_size=64)
        assert (params.diffaugment, params.ema) == ([], 0.999)
    # Asking for both explicitly is still refused, naming the field
    with pytest.raises(ValidationError, match="does not support DiffAugment"):
        GanTrainParams(preset="stable", arch="msg", diffaugment=["cutout"])


def test_stored_params_are_not_refilled_by_a_preset() -> None:
    # Given a stable ring8 job stored by a version whose preset had no pack field (and BN in G)
    stored = GanTrainParams(preset="stable", dataset="ring8").model_dump(mode="json")
    del stored["pack"]
    stored["g_batchnorm"] = True
    # When a worker reads it back, Then the job keeps what it was submitted with, and the field it
    # lacks takes its plain default, not today's preset value (which would not resume its checkpoint)
    again = GanTrainParams.from_stored(stored)
    assert (again.pack, again.g_batchnorm, again.lr_g) == (1, True, 5e-4)
    # While a new request with the same preset gets today's preset
    assert GanTrainParams.model_validate({"preset": "stable", "dataset": "ring8"}).pack == 2
    # And stored style params are read back as they were stored, too
    request = {"content": "astronaut", "styles": ["coffee"], "weights": "random", "preset": "gatys"}
    style = StyleTransferParams.model_validate(request).model_dump(mode="json")
    assert style["pooling"] == "avg"  # the gatys preset's, where the plain default is max
    del style["pooling"]
    assert StyleTransferParams.from_stored(style).pooling == "max"


NEWLINE_ID = "00000000-0000-0000-0000-000000000000\n"
STYLE_BASE: dict[str, Any] = {"content": "astronaut", "styles": ["coffee"], "weights": "random"}


@pytest.mark.parametrize(
    ("model", "values", "field", "needle"),
    [
        # a JSON string, a boolean or a float where an integer belongs; a string where a boolean belongs
        (GanTrainParams, {"steps": "10"}, "params.steps", "valid integer"),
        (GanTrainParams, {"batch_size": True}, "params.batch_size", "valid integer"),
        (GanTrainParams, {"steps": 10.0}, "params.steps", "valid integer"),
        (GanTrainParams, {"spectral_norm": "yes"}, "params.spectral_norm", "valid boolean"),
        (GanTrainParams, {"conditional": 1}, "params.conditional", "valid boolean"),
        (GanTrainParams, {"channels": True}, "params.channels", "integer 1 or 3"),
        (GanTrainParams, {"channels": 3.0}, "params.channels", "integer 1 or 3"),
        (GanTrainParams, {"lr_g": "0.001"}, "params.lr_g", "valid number"),
        (StyleTransferParams, STYLE_BASE | {"size": "256"}, "params.size", "valid integer"),
        (StyleTransferParams, STYLE_BASE | {"preserve_colors": "yes"}, "params.preserve_colors", "valid boolean"),
        # every *_every field is bounded: 10^18 is refused, not stored
        (GanTrainParams, {"sample_every": 10**18}, "params.sample_every", "must be at most 1000000"),
        (GanTrainParams, {"checkpoint_every": 10**18}, "params.checkpoint_every", "must be at most 1000000"),
        (GanTrainParams, {"log_every": 10**18}, "params.log_every", "must be at most 1000000"),
        (GanTrainParams, {"eval_every": 10**18}, "params.eval_every", "must be at most 1000000"),
        (StyleTransferParams, STYLE_BASE | {"snapshot_every": 10**18}, "params.snapshot_every", "1000000"),
        # ... and below by steps: at most 500 sample grids and 1,000 checkpoints a job
        (
            GanTrainParams,
            {"steps": 1_000_000, "sample_every": 1, "checkpoint_every": 1000},
            "params.sample_every",
            "would save 1000000 sample grids in 1000000 steps; at most 500 are allowed, so use sample_every >= 2000",
        ),
        (
            GanTrainParams,
            {"steps": 100_000, "sample_every": 1000, "checkpoint_every": 10},
            "params.checkpoint_every",
            "at most 1000 are allowed, so use checkpoint_every >= 100",
        ),
        (
            StyleTransferParams,
            STYLE_BASE | {"steps": 100_000, "checkpoint_every": 50},  # set by the caller: not raised
            "params.checkpoint_every",
            "checkpoint_every=50 would save 2000 checkpoints",
        ),
        # a wall-clock limit is whole seconds, from 1 s to 30 days
        (GanTrainParams, {"max_runtime_s": 0}, "params.max_runtime_s", "greater than or equal to 1"),
        (GanTrainParams, {"max_runtime_s": "60"}, "params.max_runtime_s", "valid integer"),
        # an id with a trailing newline ("$" matches before it) is not an id
        (GanTrainParams, {"dataset": NEWLINE_ID}, "params.dataset", "unknown dataset"),
        (StyleTransferParams, STYLE_BASE | {"content": NEWLINE_ID}, "params.content", "unknown image"),
        (StyleTransferParams, STYLE_BASE | {"styles": ["coffee", NEWLINE_ID]}, "params.styles", "unknown image"),
        (StyleTransferParams, STYLE_BASE | {"weights": NEWLINE_ID}, "params.weights", "unknown weights"),
        (GanSampleParams, {"source_job": NEWLINE_ID}, "params.source_job", "must be a job id"),
    ],
)
def test_coerced_unbounded_and_newline_values_are_refused(
    model: type[BaseModel], values: dict[str, Any], field: str, needle: str
) -> None:
    # Given a value the schema used to coerce, accept unbounded, or pass as an id; When it is validated
    with pytest.raises(ValidationError) as raised:
        model.model_validate(values)
    # Then it is a 422 naming the field
    error = describe_validation_error(raised.value, prefix="params")
    assert (error.status_code, error.field) == (422, field), error.message
    assert needle in error.message, error.message


def test_json_numbers_still_fill_float_fields_and_limits_are_stored() -> None:
    # Given integers where floats belong, and the new limits; When validated and read back as a worker does
    params = GanTrainParams.model_validate({"lr_g": 1, "r1_gamma": 0, "max_runtime_s": 3600, "sample_every": 4})
    # Then they are floats, the limit is kept, and a stored job parses as it was stored
    assert (params.lr_g, params.r1_gamma, params.max_runtime_s) == (1.0, 0.0, 3600)
    assert GanTrainParams.from_stored(params.model_dump(mode="json")) == params
    assert StyleTransferParams.model_validate(STYLE_BASE | {"tv_weight": 0, "style_blend": [1]}).tv_weight == 0.0
    # And an id without the newline is still an upload id
    assert GanTrainParams(dataset=NEWLINE_ID.strip()).dataset == NEWLINE_ID.strip()


def test_stored_jobs_from_before_the_bounds_still_parse() -> None:
    # Given jobs stored before the *_every bounds: 100,000 steps sampled every 10, a period of 10^18
    gan = GanTrainParams(steps=100).model_dump(mode="json") | {
        "steps": 100_000,
        "sample_every": 10,
        "log_every": 10**18,
    }
    style = StyleTransferParams.model_validate(STYLE_BASE).model_dump(mode="json") | {"steps": 100_000}
    # When a worker reads them back, Then they run as they were stored (the bounds are checked at submit)
    assert GanTrainParams.from_stored(gan).sample_every == 10
    assert StyleTransferParams.from_stored(style).checkpoint_every == 50
    # While the same values in a new request are refused
    with pytest.raises(ValidationError, match="at most 500 are allowed"):
        GanTrainParams.model_validate(gan)


def test_a_long_job_left_at_the_default_intervals_gets_intervals_that_fit_the_caps() -> None:
    # Given a 100,000-step job that sets no sample or checkpoint interval
    params = GanTrainParams.model_validate({"dataset": "digits", "steps": 100_000})
    # Then the stored intervals write at most the caps (500 grids, 1,000 checkpoints), not 1,000 of each
    assert (params.sample_every, params.checkpoint_every) == (200, 100)
    assert params.model_dump()["sample_every"] == 200  # stored as it will run
    # While a short job keeps the plain defaults, and an interval the caller set is never changed
    assert GanTrainParams.model_validate({"dataset": "digits", "steps": 2000}).sample_every == 100
    with pytest.raises(ValidationError, match="use sample_every >= 200"):
        GanTrainParams.model_validate({"dataset": "digits", "steps": 100_000, "sample_every": 100})
