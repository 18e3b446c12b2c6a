"""Per-job limits: the runtime's artifact caps and max_runtime_s (workers/limits.py), and the
artifact plan the API admits jobs by (shared/jobs/artifacts.py) against what real runs store.

Each test reads Given / When / Then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import JobFailed
from shared.jobs.artifacts import gan_sample_plan, gan_train_plan, style_plan
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from workers.limits import ARTIFACT_LIMIT, RUNTIME_EXCEEDED, JobLimits

pytest.importorskip("torch")

import torch

from workers.gan.loop import train as gan_train
from workers.gan.sample import generator_file, sample
from workers.gan.state import Models
from workers.hooks import InMemoryHooks
from workers.style.images import load_builtin_image
from workers.style.transfer import transfer

MIB = 1024**2


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(
    *,
    max_artifacts: int = 10,
    max_bytes: int = 10 * MIB,
    runtime: float | None = None,
    recorded: dict[str, int] | None = None,
    started: datetime | None = None,
    clock: Clock | None = None,
) -> JobLimits:
    return JobLimits(
        max_artifacts=max_artifacts,
        max_artifact_bytes=max_bytes,
        max_runtime_s=runtime,
        recorded=lambda: dict(recorded or {}),
        started_at=lambda: started,
        clock=clock or Clock(),
    )


def test_the_artifact_count_cap_holds_counting_earlier_attempts() -> None:
    # Given a cap of 3 artifacts and an earlier attempt that recorded two
    caps = limits(max_artifacts=3, recorded={"samples/step-1.png": 10, "samples/step-2.png": 10})
    # When this attempt saves step 2 again (it replaces the earlier one) and a third
    caps.admit_artifact("samples/step-2.png", 10)
    caps.admit_artifact("samples/step-3.png", 10)
    # Then a fourth is refused with artifact_limit, naming the caps and the remedy
    with pytest.raises(JobFailed) as refused:
        caps.admit_artifact("samples/step-4.png", 10)
    assert refused.value.code == ARTIFACT_LIMIT
    assert "would make 4 artifacts" in refused.value.message
    assert "limit of 3 artifacts" in refused.value.message and "raise sample_every" in refused.value.message


def test_the_artifact_bytes_cap_holds() -> None:
    # Given a 1 MiB cap; When 600 KiB are saved, then 600 KiB more
    caps = limits(max_bytes=MIB)
    caps.admit_artifact("a.png", 600 * 1024)
    with pytest.raises(JobFailed) as refused:
        caps.admit_artifact("b.png", 600 * 1024)
    # Then the second is refused, and a smaller replacement of the first still fits
    assert refused.value.code == ARTIFACT_LIMIT
    caps.admit_artifact("a.png", 100 * 1024)
    caps.admit_artifact("b.png", 600 * 1024)


def test_max_runtime_counts_from_the_jobs_first_start() -> None:
    # Given a job that first started 50 s ago with a limit of 60 s
    clock = Clock()
    caps = limits(runtime=60, started=datetime.now(UTC) - timedelta(seconds=50), clock=clock)
    # When 9 s pass, Then it may go on
    caps.check_runtime()
    clock.now += 9
    caps.check_runtime()
    # When 2 s more pass, Then it fails with runtime_exceeded
    clock.now += 2
    with pytest.raises(JobFailed) as failed:
        caps.check_runtime()
    assert failed.value.code == RUNTIME_EXCEEDED
    assert "max_runtime_s of 60 s" in failed.value.message
    # And without a limit nothing is ever read or refused
    unlimited = limits(started=datetime.now(UTC) - timedelta(days=365))
    unlimited.check_runtime()


def test_the_runtime_param_is_read_from_any_jobs_params() -> None:
    assert JobLimits.runtime_of({"max_runtime_s": 30}) == 30.0
    assert JobLimits.runtime_of({"max_runtime_s": None}) is None
    assert JobLimits.runtime_of({}) is None


class CappedHooks(InMemoryHooks):
    """In-memory hooks that enforce the runtime's artifact caps, as JobRunner.save_artifact does."""

    def __init__(self, caps: JobLimits) -> None:
        super().__init__()
        self.caps = caps

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Refuse past the caps, else keep it."""
        self.caps.admit_artifact(name, len(data))
        super().save_artifact(name, data, kind=kind, content_type=content_type)


TINY_GAN: dict[str, Any] = {"steps": 6, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8, "image_size": 16}


def _digits(params: GanTrainParams) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(64, params.resolved_channels(), params.image_size, params.image_size, generator=generator) * 2 - 1


def test_a_gan_run_stores_what_its_plan_says_and_the_cap_stops_one_that_would_store_more() -> None:
    # Given a tiny run that samples every step, and its plan
    params = GanTrainParams(**TINY_GAN, sample_every=1, image_metrics=False)
    plan = gan_train_plan(params)
    # When it runs, Then it stores exactly the planned count, within the planned bytes
    hooks = InMemoryHooks()
    gan_train(params, _digits(params), hooks)
    assert len(hooks.artifacts) == plan.count == 6 + 4
    assert sum(len(data) for data, _kind, _type in hooks.artifacts.values()) <= plan.max_bytes
    # When the same run has a cap of 5 artifacts, Then it fails with artifact_limit at the sixth
    capped = CappedHooks(limits(max_artifacts=5, max_bytes=plan.max_bytes))
    with pytest.raises(JobFailed) as failed:
        gan_train(params, _digits(params), capped)
    assert failed.value.code == ARTIFACT_LIMIT
    assert len(capped.artifacts) == 5


def test_style_and_sample_runs_store_what_their_plans_say() -> None:
    # Given a style job with two scales and a snapshot every 2 steps
    params = StyleTransferParams(
        content="astronaut", styles=["coffee"], weights="random", scales=[32, 48], steps=4, snapshot_every=2
    )
    plan = style_plan(params)
    # When it runs, Then it stores the planned count within the planned bytes
    hooks = InMemoryHooks()
    transfer(params, load_builtin_image("astronaut"), [load_builtin_image("coffee")], hooks)
    assert len(hooks.artifacts) == plan.count == 4 + 2 + 1
    assert sum(len(data) for data, _kind, _type in hooks.artifacts.values()) <= plan.max_bytes
    # And gan.sample's two files fit its plan
    source = GanTrainParams(**TINY_GAN)
    weights = generator_file(Models.create(source, 1, torch.device("cpu")).net_g, source.model_dump())
    picture, raw = sample(weights, n=300, seed=0)
    sample_plan = gan_sample_plan(source, 300)
    assert sample_plan.count == 2
    assert len(picture) + len(raw) <= sample_plan.max_bytes
