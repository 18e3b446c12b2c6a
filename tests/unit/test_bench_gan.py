"""bench/gan_speed.py at a tiny size: both sides train, every Atelier hook fires, one rate per run.

The Atelier side is a real gan.train job run by the worker runtime in process, so this test uses
the local Postgres (a temporary database, dropped after). Each test reads Given / When / Then."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench import gan_speed
from workers.gan.data import load_builtin

TINY = {"batch_size": 8, "nz": 8, "ngf": 8, "ndf": 8}
STEPS = 2
REPEATS = 2


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_builtin(gan_speed.DATASET, image_size=gan_speed.IMAGE_SIZE, channels=gan_speed.CHANNELS)


def test_the_reference_loop_trains_and_writes_its_files(digits: torch.Tensor, tmp_path: Path) -> None:
    # Given the dcgan example's loop at a tiny width, a grid every step
    config = gan_speed.Config(steps=STEPS, sample_every=1, checkpoint_every=1, **TINY)
    # When it runs for two iterations
    run = gan_speed.run_reference(digits, config, tmp_path)
    # Then it trained two batches with finite losses, saved its grids and one epoch's state_dicts
    assert run.steps == STEPS and run.images_per_s > 0
    assert math.isfinite(run.d_loss) and math.isfinite(run.g_loss)
    assert {"real_samples.png", "fake_samples_epoch_000.png", "netG_epoch_0.pth", "netD_epoch_0.pth"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert len((tmp_path / "log.txt").read_text().splitlines()) == STEPS


def test_measure_alternates_both_sides_with_every_hook_on(digits: torch.Tensor, tmp_path: Path) -> None:
    # Given the worker runtime on a temporary database and a tiny schedule with every hook firing
    config = gan_speed.Config(steps=STEPS, sample_every=1, checkpoint_every=1, **TINY)
    with gan_speed.atelier_runtime(tmp_path, device=torch.device("cpu"), threads=1) as runtime:
        # When the benchmark measures two repeats
        references, ateliers = gan_speed.measure(digits, config, runtime, repeats=REPEATS)
    # Then there is one images/s figure per run and side, and every run trained with finite losses
    assert [r.side for r in references] == ["reference"] * REPEATS
    assert [r.side for r in ateliers] == ["atelier"] * REPEATS
    for run in references + ateliers:
        assert run.steps == STEPS and run.images_per_s > 0
        assert math.isfinite(run.d_loss) and math.isfinite(run.g_loss)
    # ... and the Atelier job wrote nine metrics per step plus one diversity per grid, two grids, and kept one
    # checkpoint (the last step's: each new pointer's checkpoint replaces the one before)
    assert all(r.details == {"metric_rows": 2 * 9 + 2, "grids": 2, "checkpoints": 1} for r in ateliers)


def test_the_default_cpu_schedule_is_the_gpu_one_scaled_down() -> None:
    # Given the defaults, Then the CPU run keeps the GPU run's proportions (checkpoint at 1/2, grids every 1/10)
    gpu = gan_speed.Config.for_steps(gan_speed.DEFAULT_STEPS["cuda"], torch.device("cpu"))
    cpu = gan_speed.Config.for_steps(gan_speed.DEFAULT_STEPS["cpu"], torch.device("cpu"))
    assert (gpu.steps, gpu.checkpoint_every, gpu.sample_every) == (1000, 500, 100)
    assert (cpu.steps, cpu.checkpoint_every, cpu.sample_every) == (40, 20, 4)
