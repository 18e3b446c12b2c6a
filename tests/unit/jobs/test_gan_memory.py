"""The GAN jobs' memory estimate (shared/jobs/memory.py): its parameter counts are the real
networks', it scales with what costs memory, and it covers the peak memory of real runs,
measured in a fresh process on CPU as tests/unit/jobs/test_style_memory.py does (the peak growth of
anonymous resident memory, sampled every 2 ms, one thread, glibc returning freed blocks at
once). The GPU's allocator is not measured here: there is no GPU on this machine.

Calibration on this machine (2-core VM, CPU, fp32; 3 steps, a sample grid and a checkpoint):
measured growth against the estimate less its fixed GAN_OVERHEAD_BYTES (256 MiB, slack for a
GPU's allocator and kernels' workspace, which CPU runs don't show), in MB. The size-dependent
part alone covers every measured peak, by 1.2x to 2.0x:

| params | measured | estimate - overhead | ratio |
|---|---|---|---|
| dcgan 64 px, batch 128 | 478 | 769 | 1.6 |
| dcgan 128 px, ngf = ndf = 32, batch 64 | 496 | 812 | 1.6 |
| progressive 64 px, ngf = ndf = 32, batch 64 | 509 | 961 | 1.9 |
| msg 64 px, ngf = ndf = 32, batch 64 | 511 | 976 | 1.9 |
| dcgan 64 px, batch 128, wgan-gp | 630 | 903 | 1.4 |
| dcgan 64 px RGB, batch 128, DiffAugment x 3 | 500 | 1003 | 2.0 |
| dcgan 64 px, batch 128, ema 0.999 (the batch-norm recalibration at 512) | 688 | 816 | 1.2 |
| dcgan 64 px, batch 128, r1 + spectral norm | 588 | 810 | 1.4 |
| dcgan 64 px, batch 128, conditional | 526 | 862 | 1.6 |
| dcgan 64 px, batch 128, pack 4 | 296 | 492 | 1.7 |
| mlp 32 px, ngf = ndf = 128, batch 256 | 203 | 360 | 1.8 |
| mlp ring8, ngf = ndf = 256, batch 512 | 407 | 754 | 1.9 |
| the defaults (dcgan 32 px, batch 64) | 74 | 117 | 1.6 |
| gan.sample, 2,048 images at 64 px RGB (ngf 32) | 236 | 482 | 2.0 |

Each test reads Given / When / Then."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shared.jobs.gan_train import GanTrainParams
from shared.jobs.memory import (
    GAN_OVERHEAD_BYTES,
    GIB,
    gan_memory,
    gan_memory_bytes,
    gan_networks,
    gan_sample_memory_bytes,
)
from tests.support.peak_memory import ANON_SOURCE, MEASURE_ENV

torch = pytest.importorskip("torch")

from workers.gan.state import Models  # noqa: E402 - after the torch check

REPO = Path(__file__).resolve().parents[3]
MAX_OVER_ESTIMATE = 2.5  # the size-dependent part may be at most this many times the measured peak
# The issue's example: by parameter count about 89 GiB of weights, gradients and Adam state
MONSTER = {
    "dataset": "digits",
    "batch_size": 4096,
    "ngf": 1024,
    "ndf": 1024,
    "nz": 1024,
    "image_size": 128,
    "steps": 10,
}
ADAM_STATE_BYTES = 16  # fp32 weight, gradient and two moments per parameter

MEASURE = ANON_SOURCE + textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from shared.jobs.specs import GanSampleParams, GanTrainParams
    from workers.gan.data import load_points
    from workers.gan.loop import train
    from workers.gan.sample import generator_file, sample
    from workers.gan.state import Models
    from workers.hooks import InMemoryHooks


    params = GanTrainParams.model_validate(json.loads(sys.argv[1]))
    n = int(sys.argv[2])
    channels = params.resolved_channels()
    if n:  # gan.sample: a fresh generator's file, then draw n images
        models = Models.create(params, channels, torch.device("cpu"))
        weights = generator_file(models.net_g, params.model_dump())
        del models
        run = lambda: sample(weights, n=n, seed=0)
    else:
        if params.points:
            data = load_points(params.dataset)
        else:
            shape = (256, channels, params.image_size, params.image_size)
            data = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        labels = torch.arange(data.shape[0]) % 10 if params.conditional else None
        classes = 10 if params.conditional else 0
        run = lambda: train(params, data, InMemoryHooks(), labels=labels, num_classes=classes)
    print_growth(run)
    """
)


def _params(**fields: Any) -> GanTrainParams:
    return GanTrainParams(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"image_size": 128, "ngf": 32, "ndf": 48, "channels": 3},
        {"image_size": 16},
        {"arch": "mlp"},
        {"dataset": "ring8", "preset": "stable"},
        {"arch": "progressive", "image_size": 64, "ngf": 16, "ndf": 24},
        {"arch": "msg", "image_size": 64, "ngf": 16, "ndf": 24, "channels": 3},
        {"conditional": True},
        {"pack": 2},
        {"minibatch_std": 4, "pack": 2},
        {"loss": "wgan-gp"},
        {"spectral_norm": True},
    ],
)
def test_the_parameter_counts_are_the_real_networks(fields: dict[str, Any]) -> None:
    # Given params, and the networks the loop builds for them
    params = _params(**fields)
    classes = 10 if params.conditional else 0
    models = Models.create(params, params.resolved_channels(), torch.device("cpu"), num_classes=classes)
    # When the estimate counts them without torch
    net_g, net_d = gan_networks(params, classes)
    # Then it counts exactly the parameters that the networks (and Adam) hold
    assert net_g.params == sum(p.numel() for p in models.net_g.parameters())
    assert net_d.params == sum(p.numel() for p in models.net_d.parameters())


def test_the_estimate_grows_with_what_costs_memory() -> None:
    base = gan_memory(_params(image_size=64, batch_size=128))
    # A batch twice as large is about twice the activations, the same state
    double = gan_memory(_params(image_size=64, batch_size=256))
    assert 1.9 < double.activations / base.activations < 2.1
    assert double.state == base.state
    # Twice the side is about four times the activations
    assert 3.5 < gan_memory(_params(image_size=128, batch_size=128)).activations / base.activations < 4.5
    # Twice the widths is about four times the weights and their optimiser state
    assert 3.5 < gan_memory(_params(image_size=64, batch_size=128, ngf=128, ndf=128)).state / base.state < 4.5
    # An EMA generator, a gradient penalty and DiffAugment each cost more; packing costs D less
    assert gan_memory(_params(image_size=64, batch_size=128, ema=0.999)).state > base.state
    assert gan_memory(_params(image_size=64, batch_size=128, loss="wgan-gp")).activations > base.activations
    augmented = _params(image_size=64, batch_size=128, diffaugment=["translation"])
    assert gan_memory(augmented).activations > base.activations
    assert gan_memory(_params(image_size=64, batch_size=128, pack=4)).activations < base.activations


def test_the_issues_monster_is_counted_as_the_issue_counted_it() -> None:
    # Given the job the issue submitted: widths, latent and batch at their maxima, 128 px
    params = _params(**MONSTER)
    net_g, net_d = gan_networks(params)
    # Then its weights, gradients and Adam moments alone are about 89 GiB, as the issue counted
    assert 85 < (net_g.params + net_d.params) * ADAM_STATE_BYTES / GIB < 92
    # And the whole estimate, activations of a 4096 batch included, is far over any GPU
    assert gan_memory_bytes(params) > 1000 * GIB


def test_the_sample_estimate_grows_with_n() -> None:
    # Given a 64 px RGB generator; When 3,072 more images are drawn
    source = _params(image_size=64, channels=3)
    extra = gan_sample_memory_bytes(source, 4096) - gan_sample_memory_bytes(source, 1024)
    # Then each costs a few copies of its float32 pixels (the chunks, their concatenation, the .npy)
    image_bytes = 3 * 64 * 64 * 4
    assert 2 < extra / (3072 * image_bytes) < 6


def _measure(params: GanTrainParams, n: int = 0) -> int:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(params.model_dump(mode="json")), str(n)],
        cwd=REPO,
        env=MEASURE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(json.loads(done.stdout.strip().splitlines()[-1])["growth"])


SHORT = {"steps": 3, "sample_every": 3, "checkpoint_every": 3, "image_size": 64}


@pytest.mark.parametrize(
    "fields",
    [
        SHORT | {"batch_size": 96},
        SHORT | {"batch_size": 64, "arch": "msg", "ngf": 32, "ndf": 32},
        # the EMA generator's batch-norm recalibration (512 latents) is the tightest case measured (1.2x)
        SHORT | {"batch_size": 96, "ema": 0.999},
    ],
    ids=["dcgan-64px", "msg-64px", "dcgan-64px-ema"],
)
def test_the_estimate_covers_a_real_training_runs_peak(fields: dict[str, Any]) -> None:
    # Given a run's params and its estimate
    params = _params(**fields)
    estimate = gan_memory_bytes(params)
    # When it runs in a fresh process
    growth = _measure(params)
    # Then the estimate's size-dependent part alone covers the peak, and is not wildly above it
    assert growth <= estimate - GAN_OVERHEAD_BYTES, (growth, estimate)
    assert estimate - GAN_OVERHEAD_BYTES <= MAX_OVER_ESTIMATE * growth, (growth, estimate)


def test_the_sample_estimate_covers_a_real_sample_runs_peak() -> None:
    # Given a 64 px RGB generator and 2,048 images to draw (about 100 MB of float32 output)
    source, n = _params(image_size=64, channels=3, ngf=32), 2048
    estimate = gan_sample_memory_bytes(source, n)
    # When gan.sample's engine draws them in a fresh process
    growth = _measure(source, n)
    # Then the estimate's size-dependent part alone covers the peak, and is not wildly above it
    assert growth <= estimate - GAN_OVERHEAD_BYTES, (growth, estimate)
    assert estimate - GAN_OVERHEAD_BYTES <= MAX_OVER_ESTIMATE * growth, (growth, estimate)
