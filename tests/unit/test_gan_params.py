"""gan.train params: backward-compatible defaults, presets, and nonsense combinations refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.api.submit import describe_validation_error
from shared.jobs.specs import GAN_PRESETS, GanTrainParams, StyleTransferParams

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
