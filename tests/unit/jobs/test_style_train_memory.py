"""style.train's memory estimate (shared/jobs/memory.py): how it scales, and that it covers the peak memory
of a real run's steps, measured in a fresh process on CPU as the peak growth of its anonymous resident memory
(as tests/unit/jobs/test_style_memory.py does for style.transfer).

Each test reads Given / When / Then."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shared.jobs.memory import OVERHEAD_BYTES, style_model_params, style_train_memory_bytes
from shared.jobs.style_train import StyleTrainParams
from tests.support.peak_memory import ANON_SOURCE, MEASURE_ENV

REPO = Path(__file__).resolve().parents[3]
# The size-dependent part may be at most this many times the measured peak. The peak of the same seeded
# run varies by a fifth from one fresh process to the next (AdaIN at 256 px, batch 4: 0.82 to 0.97 GB over
# 16 runs on the 2-core VM, sampled RssAnon within 20 MB of the kernel's VmHWM each time), against an
# estimate of 2.09 GB: 2.2x to 2.55x. Johnson's: 1.30 to 1.40 GB against 2.76 GB, 2.0x to 2.1x. (2.5 failed
# AdaIN once in CI, 2026-11-30.)
MAX_OVER_ESTIMATE = 3.0

MEASURE = ANON_SOURCE + textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from shared.jobs.style_train import StyleTrainParams
    from workers.hooks import InMemoryHooks
    from workers.style.adain import train_adain
    from workers.style.content import builtin_content, content_from_images
    from workers.style.images import load_builtin_image
    from workers.style.johnson import train_johnson

    params = StyleTrainParams.model_validate(json.loads(sys.argv[1]))
    content, style = builtin_content(), load_builtin_image("coffee")
    if params.method == "adain":
        print_growth(lambda: train_adain(params, content, content_from_images([style]), InMemoryHooks()))
    else:
        print_growth(lambda: train_johnson(params, content, [style], InMemoryHooks()))
    """
)


def _params(**fields: Any) -> StyleTrainParams:
    return StyleTrainParams(**({"styles": ["coffee"], "weights": "random"} | fields))


def test_the_estimate_grows_with_what_costs_memory() -> None:
    base = style_train_memory_bytes(_params(size=256, batch_size=4)) - OVERHEAD_BYTES
    # Pixels: twice the side is about four times the activations; twice the batch about twice
    assert 3.3 < (style_train_memory_bytes(_params(size=512, batch_size=4)) - OVERHEAD_BYTES) / base < 4.2
    assert 1.7 < (style_train_memory_bytes(_params(size=256, batch_size=8)) - OVERHEAD_BYTES) / base < 2.1
    # A wider network costs more; shallower loss layers less
    assert style_train_memory_bytes(_params(size=256, batch_size=4, width=64)) - OVERHEAD_BYTES > 1.3 * base
    shallow = _params(size=256, batch_size=4, content_layers=["relu1_2"], style_layers=["relu1_2"])
    assert style_train_memory_bytes(shallow) - OVERHEAD_BYTES < base
    # Style pictures at their crops' size cost nothing more; a style pass wider than the content batch's does
    assert style_train_memory_bytes(_params(size=256, batch_size=4, style_size=256)) - OVERHEAD_BYTES == base
    big_style = _params(size=128, batch_size=1, style_size=1024)
    assert style_train_memory_bytes(big_style) > 1.5 * style_train_memory_bytes(_params(size=128, batch_size=1))


def test_the_parameter_count_is_johnsons_network() -> None:
    # Johnson et al.'s network at width 32 with 5 residual blocks has about 1.68 million parameters
    assert 1_600_000 < style_model_params(_params()) < 1_750_000
    # and each residual block adds two 128-channel 3x3 convolutions
    assert style_model_params(_params(residual_blocks=6)) - style_model_params(_params()) > 2 * 128 * 128 * 9


@pytest.mark.parametrize(
    "fields",
    [{"size": 256, "batch_size": 4, "steps": 2}, {"method": "adain", "size": 256, "batch_size": 4, "steps": 2}],
    ids=["johnson-256px-batch4", "adain-256px-batch4"],
)
def test_the_estimate_covers_a_real_runs_peak(fields: dict[str, Any]) -> None:
    # Given a run's params and its estimate
    params = _params(**fields, preview_every=None, checkpoint_every=1000)
    estimate = style_train_memory_bytes(params)
    # When it runs in a fresh process
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(params.model_dump(mode="json"))],
        cwd=REPO,
        env=MEASURE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    growth = json.loads(done.stdout.strip().splitlines()[-1])["growth"]
    # Then its peak memory is within the estimate, and the estimate is not wildly above it
    assert growth <= estimate, (growth, estimate)
    assert estimate - OVERHEAD_BYTES <= MAX_OVER_ESTIMATE * growth, (growth, estimate)
