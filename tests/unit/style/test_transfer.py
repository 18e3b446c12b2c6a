"""The style-transfer loop driven by in-memory hooks: loss, output, checkpoints, resume."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from PIL import Image

from shared.jobs.style_transfer import StyleTransferParams
from workers.hooks import STOP_CANCEL, InMemoryHooks, StopRequested
from workers.style.images import load_builtin_image
from workers.style.transfer import (
    OUTPUT_ARTIFACT,
    RANDOM_WEIGHTS_WARNING,
    transfer,
)
from workers.training import DivergenceError

SIZE = 64
STEPS = 20
MIN_STYLE_DROP = 10.0
RESUME_SIZE = 32
OTHER_SIZE = 40
RESUME_STEPS = 8
RESUME_CHECKPOINT_EVERY = 4
STOP_AT = 3
METRICS = ("content_loss", "style_loss", "tv_loss", "total_loss")


def _params(**overrides: Any) -> StyleTransferParams:
    """StyleTransferParams defaults, except a small image, few steps and random weights."""
    fields: dict[str, Any] = {
        "content": "astronaut",
        "styles": ["coffee"],
        "size": SIZE,
        "steps": STEPS,
        "weights": "random",
    }
    return StyleTransferParams(**(fields | overrides))


def _run(params: StyleTransferParams, hooks: InMemoryHooks) -> dict[str, Any]:
    styles = [load_builtin_image(name) for name in params.styles]
    return transfer(params, load_builtin_image(params.content), styles, hooks)


@dataclass
class Finished:
    params: StyleTransferParams
    hooks: InMemoryHooks
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def finished() -> Finished:
    """One uninterrupted default run (astronaut content, coffee style), shared by several tests."""
    params, hooks = _params(), InMemoryHooks()
    return Finished(params, hooks, _run(params, hooks))


def test_style_loss_falls_at_least_tenfold_with_the_default_settings(finished: Finished) -> None:
    style = finished.hooks.series("style_loss")
    # log_every defaults to 1: every step is logged
    assert [step for step, _ in style] == list(range(1, STEPS + 1))
    first, last = style[0][1], style[-1][1]
    assert first / last >= MIN_STYLE_DROP, f"style loss only fell {first / last:.1f}x ({first:g} -> {last:g})"
    # The image starts as the content, so the content loss starts at exactly zero
    assert finished.hooks.series("content_loss")[0][1] == 0.0


def test_every_logged_step_reports_all_four_losses_and_progress(finished: Finished) -> None:
    for step in range(1, STEPS + 1):
        values = {name: finished.hooks.metrics[(name, step)] for name in METRICS}
        assert values["total_loss"] == pytest.approx(
            values["content_loss"] + values["style_loss"] + values["tv_loss"], rel=1e-5
        )
    assert finished.hooks.progress == (STEPS, STEPS)
    assert finished.summary["final_metrics"] == {name: finished.hooks.metrics[(name, STEPS)] for name in METRICS}


def test_output_png_is_a_valid_image_of_the_content_shape(finished: Finished) -> None:
    data, kind, content_type = finished.hooks.artifacts[OUTPUT_ARTIFACT]
    assert (kind, content_type) == ("output", "image/png")
    image = Image.open(io.BytesIO(data))
    image.verify()
    # astronaut is square, so both sides equal the requested size
    assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)
    assert finished.summary["width"] == finished.summary["height"] == SIZE
    assert finished.summary["resumed_from_step"] is None


def test_random_weights_are_flagged_to_the_user(finished: Finished) -> None:
    assert finished.hooks.warnings == [RANDOM_WEIGHTS_WARNING]


@pytest.fixture(scope="module")
def short_run() -> Finished:
    """An uninterrupted short run that checkpoints every 4 of its 8 steps."""
    params = _params(size=RESUME_SIZE, steps=RESUME_STEPS, checkpoint_every=RESUME_CHECKPOINT_EVERY)
    hooks = InMemoryHooks()
    return Finished(params, hooks, _run(params, hooks))


def test_an_uninterrupted_run_checkpoints_every_checkpoint_every_steps(short_run: Finished) -> None:
    assert [step for step, _ in short_run.hooks.checkpoints] == [4, 8]
    state = torch.load(io.BytesIO(short_run.hooks.checkpoints[-1][1]), weights_only=True)
    assert set(state) == {"version", "step", "scale", "image", "variable", "optimizer", "params"}
    assert state["step"] == RESUME_STEPS
    assert state["image"].shape == (1, 3, RESUME_SIZE, RESUME_SIZE)
    assert state["params"] == short_run.params.model_dump(mode="json")


def test_a_stopped_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(short_run: Finished) -> None:
    # Given an uninterrupted run (short_run) and another run of the same params
    params, reference = short_run.params, short_run.hooks
    # When that one is cancelled after step 3...
    interrupted = InMemoryHooks(stop_at_step=STOP_AT)
    with pytest.raises(StopRequested) as info:
        _run(params, interrupted)
    assert (info.value.step, info.value.reason) == (STOP_AT, STOP_CANCEL)
    assert [step for step, _ in interrupted.checkpoints] == [STOP_AT]
    # ...and resumed from its checkpoint by a fresh runtime
    resumed = InMemoryHooks(checkpoints=list(interrupted.checkpoints))
    summary = _run(params, resumed)
    # Then it ran only the remaining steps and ended bit-identical
    assert summary["resumed_from_step"] == STOP_AT
    assert min(step for step, _ in resumed.series("total_loss")) == STOP_AT + 1
    for name in METRICS:
        assert resumed.series(name) == reference.series(name)[STOP_AT:]
    final = torch.load(io.BytesIO(resumed.checkpoints[-1][1]), weights_only=True)
    expected = torch.load(io.BytesIO(reference.checkpoints[-1][1]), weights_only=True)
    assert final["step"] == expected["step"] == RESUME_STEPS
    assert torch.equal(final["image"], expected["image"])
    assert resumed.artifacts[OUTPUT_ARTIFACT][0] == reference.artifacts[OUTPUT_ARTIFACT][0]


def test_a_non_finite_loss_fails_with_divergence_error() -> None:
    # Given an infinite style weight (set past validation, which may well refuse it)
    params = _params(size=RESUME_SIZE, steps=2).model_copy(update={"style_weight": float("inf")})
    hooks = InMemoryHooks()
    with pytest.raises(DivergenceError, match="diverged at step 1"):
        _run(params, hooks)
    assert hooks.checkpoints == []
    assert OUTPUT_ARTIFACT not in hooks.artifacts


def test_a_checkpoint_of_another_image_size_is_refused() -> None:
    # Given a checkpoint from a 40 px run
    interrupted = InMemoryHooks(stop_at_step=1)
    with pytest.raises(StopRequested):
        _run(_params(size=OTHER_SIZE, steps=2), interrupted)
    # When a 32 px run tries to resume from it, it refuses instead of mixing shapes
    hooks = InMemoryHooks(checkpoints=list(interrupted.checkpoints))
    with pytest.raises(ValueError, match="shape"):
        _run(_params(size=RESUME_SIZE, steps=2), hooks)


def test_the_number_of_style_images_must_match_the_params() -> None:
    params = _params(styles=["coffee", "rocket"])
    with pytest.raises(ValueError, match="1 style images for 2 styles"):
        transfer(params, load_builtin_image("astronaut"), [load_builtin_image("coffee")], InMemoryHooks())
