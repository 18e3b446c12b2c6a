"""The style job's memory estimate (shared/jobs/memory.py): how it scales, and that it covers
the peak memory of real runs, measured in a fresh process on CPU: the peak growth of its
anonymous resident memory (RssAnon, sampled every 2 ms) over the run. Total RSS would also
count library pages read in from disk, which varies with what else the machine is doing.
The GPU's allocator is not measured here: there is no GPU on this machine.

Each test reads Given / When / Then."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from shared.jobs.memory import OVERHEAD_BYTES, style_memory_bytes
from shared.jobs.style_transfer import StyleTransferParams
from tests.support.peak_memory import ANON_SOURCE, MEASURE_ENV

REPO = Path(__file__).resolve().parents[3]
MAX_OVER_ESTIMATE = 2.5  # the size-dependent part may be at most this many times the measured peak

MEASURE = ANON_SOURCE + textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from shared.jobs.specs import StyleTransferParams
    from workers.hooks import InMemoryHooks
    from workers.style.images import load_builtin_image
    from workers.style.transfer import run_transfer


    params = StyleTransferParams.model_validate(json.loads(sys.argv[1]))
    content, style = load_builtin_image("astronaut"), load_builtin_image("coffee")
    print_growth(lambda: run_transfer(params, content, [style], InMemoryHooks()))
    """
)


def _params(**fields: Any) -> StyleTransferParams:
    return StyleTransferParams(**({"content": "astronaut", "styles": ["coffee"], "weights": "random"} | fields))


def test_the_estimate_grows_with_what_costs_memory() -> None:
    base = style_memory_bytes(_params(size=1024))
    # Pixels: twice the side is about four times the memory
    assert 3.5 < style_memory_bytes(_params(size=2048)) / base < 4.2
    # L-BFGS keeps 100 pairs of image-sized vectors; Adam two
    assert style_memory_bytes(_params(size=1024, optimizer="lbfgs")) > base * 1.3
    # Shallower layers need less; a larger style_scale needs more for the style images' pass
    assert style_memory_bytes(_params(size=1024, content_layers=["relu2_1"], style_layers=["relu1_1"])) < base
    assert style_memory_bytes(_params(size=1024, style_scale=4.0)) > base


@pytest.mark.parametrize(
    "fields",
    [
        {"size": 384, "steps": 3, "optimizer": "adam"},
        # 110 L-BFGS steps fill its 100-step history; shallow layers make the history count
        {"size": 128, "steps": 110, "optimizer": "lbfgs", "content_layers": ["relu2_1"], "style_layers": ["relu2_1"]},
    ],
    ids=["adam-384px", "lbfgs-128px-full-history"],
)
def test_the_estimate_covers_a_real_runs_peak(fields: dict[str, Any]) -> None:
    # Given a run's params and its estimate
    params = _params(**fields)
    estimate = style_memory_bytes(params)
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
