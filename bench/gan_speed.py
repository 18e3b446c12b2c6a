"""GAN throughput benchmark: Atelier's gan.train with every hook on, against pytorch/examples dcgan.

Run as ``python -m bench.gan_speed`` (``make bench-gan``). It needs the Postgres that the tests
use (``127.0.0.1:5432``, trust auth); nothing else, and no network.

The reference is the training loop of pytorch/examples ``dcgan/main.py``, reimplemented here:
its Generator and Discriminator (nz 100, ngf = ndf = 64, nc 1, BatchNorm, D ending in
nn.Sigmoid), its ``weights_init``, nn.BCELoss, Adam (lr 2e-4, betas (0.5, 0.999)) for both nets
and ``cudnn.benchmark = True`` (only while the reference runs). Per iteration: D on a real batch
(backward), D on a detached fake batch (backward), D's step; G through D with the real label
(backward), G's step; ``.mean().item()`` for D(x), D(G(z)) before and after, ``.item()`` for both
losses, and the original's progress line formatted every iteration (written to a log file in
the run's temp dir, not the terminal). Every ``sample_every`` iterations, counted over the run
from iteration 0 (the original counts ``i % 100`` within an epoch, which with the digits' short
epochs would mean a grid every epoch), it saves the real batch and a fixed-noise fake grid with
torchvision's ``save_image(normalize=True)``, G run in train mode as the original does. After
every epoch (the dataset's 28 full batches of 64; a final partial epoch counts) it saves netG's
and netD's state_dicts with torch.save. Data: a fresh index permutation of the in-memory dataset
per epoch, full batches only (the remainder of 1797 / 64 is dropped, so every step is 64
images), no DataLoader and no worker processes.

Atelier runs a real ``gan.train`` job through the real worker runtime in this process:
``run_job(WorkerContext.build(settings), job_id, workers.engines.execute)`` on a temporary
Postgres database (migrated with Alembic) and the local object store in a temp dir. The job is
the lesson preset (DCGAN, non-saturating BCE on logits, Adam 2e-4 with beta1 0.5 for both nets,
no remedies) at 64 px, batch 64, nz 100, ngf = ndf = 64, on the built-in ``digits`` dataset, with
every hook on: metrics every step (``log_every`` 1: nine metrics per step, flushed to Postgres by
the heartbeat thread), a fixed-noise sample grid (PNG, stored and recorded) every
``sample_every`` steps, a checkpoint (models, optimisers, RNG states; uploaded, then its pointer
committed with the metrics) every ``checkpoint_every`` steps, and what gan.train stores at the
end (the final grid, the loss-curve plot, the latent-interpolation strip, generator.pt). The
image-quality evaluation (fd, kid, precision, recall on 1,000 samples) is switched off with
``image_metrics=False``: the reference evaluates nothing, so it would be extra work, not
overhead. After each run the bench checks the job succeeded and counts its metric rows, grids
and checkpoints, so a run with a hook silently off would fail.

Both sides train on the same tensor: sklearn's digits upscaled to 64 px as Atelier's
``load_builtin("digits", image_size=64, channels=1)`` produces it (1797 images in [-1, 1]), on
the same device, with the same torch intra-op threads (``--threads``; Settings.torch_threads is
set to the same value), in the same process.

Schedules. GPU default: 1000 steps, a grid every 100 steps and an Atelier checkpoint every 500
(so the step-500 checkpoint and the final one are included). CPU default: the same schedule
scaled by 1/25 so a full run takes about 10 minutes on a 2-core machine: 40 steps, a grid every
4 steps and a checkpoint every 20 (the 500-step checkpoint is NOT reached at this default;
checkpoint_every is lowered proportionally, to 20, and sample_every to 4). ``--steps`` scales
both intervals the same way (steps / 2 and steps / 10).

What is timed, for each side, is one complete training run, wall clock (``perf_counter``; on CUDA
the device is synchronised before and after):
- reference: building and initialising both nets, the optimisers and the fixed noise, every
  iteration, every grid, and every per-epoch torch.save;
- Atelier: the whole ``run_job`` call: the claim (one UPDATE), the heartbeat thread, dataset
  lookup (already cached in this process), building the nets, every step with its hooks, the
  final artifacts, and the final metrics flush and state change.
Not timed, for either side: imports, loading the dataset once, creating the database, the
WorkerContext (per worker process) and the job row (the API's submit), the temp dirs, and an
untimed warm-up run of each side (2 steps, every hook firing) that pays one-off costs (lazy
imports, first-use kernel and allocator set-up) before the first measured run.

images/s = steps * 64 / seconds. Runs alternate (reference, Atelier, reference, Atelier, ...)
``--repeats`` times so drift from other load on a shared machine hits both alike; each side's
figure is the median. The last line prints ratio = Atelier's median images/s / the reference's.
The issue's targets: CPU >= 0.95; GPU >= 3.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from sqlalchemy import func, select

from bench.dcgan_reference import (
    BETA1,
    BETA2,
    CHANNELS,
    CPU_TARGET,
    DATASET,
    DEFAULT_REPEATS,
    DEFAULT_STEPS,
    DEFAULT_THREADS,
    GPU_TARGET,
    IMAGE_SIZE,
    LR,
    WARMUP_STEPS,
    Config,
    Run,
    atelier_params,
    run_reference,
    sync,
)
from bench.machine import cpu_model
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.models import Artifact, Job, Metric
from shared.db.session import transaction
from shared.jobs.params import QUEUE_GPU
from shared.jobs.states import JobState
from tests.support import services
from workers.engines import execute
from workers.gan.data import load_builtin
from workers.gan.loop import METRIC_NAMES, SAMPLE_ARTIFACT
from workers.runtime import WorkerContext, run_job
from workers.training import SAMPLE_KIND

GRID_PATTERN = SAMPLE_ARTIFACT.split("{", 1)[0] + "%"  # the periodic grids, not the final pictures


# -- Atelier: a gan.train job through the worker runtime ---------------------------------------


@dataclass
class AtelierRuntime:
    """The worker runtime in this process: settings, a WorkerContext and a tenant to submit as."""

    settings: Settings
    ctx: WorkerContext
    tenant_id: uuid.UUID

    @property
    def objects_dir(self) -> Path:
        """Root of the local object store."""
        return self.settings.objects_dir


@contextlib.contextmanager
def atelier_runtime(root: Path, *, device: torch.device, threads: int) -> Iterator[AtelierRuntime]:
    """A migrated temporary database, a local object store under ``root`` and a worker context; dropped after."""
    db_name, db_url = services.create_database()
    ctx: WorkerContext | None = None
    try:
        settings = Settings(
            database_url=db_url,
            data_dir=root,
            storage_backend="local",
            storage_dir=root / "objects",
            device="cuda" if device.type == "cuda" else "cpu",
            torch_threads=threads,
            worker_name="bench-gan",
            max_attempts=1,
            allow_weight_download=False,
        )
        upgrade(settings)
        ctx = WorkerContext.build(settings)
        with transaction(ctx.sessions) as session:
            tenant_id = queries.create_tenant(session, name=f"bench-gan-{uuid.uuid4().hex[:8]}").id
        yield AtelierRuntime(settings=settings, ctx=ctx, tenant_id=tenant_id)
    finally:
        if ctx is not None:
            bind = ctx.sessions.kw.get("bind")
            if bind is not None:
                bind.dispose()
        services.drop_database(db_name)


def run_atelier(runtime: AtelierRuntime, config: Config) -> Run:
    """Submit a gan.train job row, run it with run_job in this process (timed), and check every hook fired."""
    params = atelier_params(config)
    ctx = runtime.ctx
    with transaction(ctx.sessions) as session:
        job, _created = queries.create_job(
            session,
            tenant_id=runtime.tenant_id,
            job_type="gan.train",
            params=params.model_dump(mode="json"),
            queue=QUEUE_GPU,
            total=params.steps,
            max_attempts=1,
            idempotency_key=None,
        )
        job_id = job.id
    sync(config.device)
    started = time.perf_counter()
    outcome = run_job(ctx, job_id, execute)
    sync(config.device)
    seconds = time.perf_counter() - started

    with transaction(ctx.sessions) as session:
        row = session.get(Job, job_id)
        assert row is not None
        state, error, checkpoint_step = row.state, row.error_message, row.checkpoint_step
        latest = dict(row.latest_metrics)
        metric_rows = session.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == job_id)) or 0
        grids = (
            session.scalar(
                select(func.count())
                .select_from(Artifact)
                .where(Artifact.job_id == job_id, Artifact.kind == SAMPLE_KIND, Artifact.name.like(GRID_PATTERN))
            )
            or 0
        )
    if outcome != "succeeded" or state != JobState.SUCCEEDED.value:
        raise RuntimeError(f"the Atelier job ended {outcome} ({state}): {error}")
    checkpoint_dir = runtime.objects_dir / "jobs" / str(job_id) / "checkpoints"
    kept = sorted(p.name for p in checkpoint_dir.glob("*.pt"))
    # A job keeps one checkpoint (the runner deletes the one each new pointer replaces): the last step's.
    checkpoints = len(kept) if kept and kept[-1].endswith(f"step-{config.steps:08d}.pt") else 0
    # Grids fire at every multiple of their interval and at the last step.
    sample_steps = -(-config.steps // config.sample_every)
    expected_checkpoints = 1
    expected_metrics = config.steps * len(METRIC_NAMES) + sample_steps  # + one diversity value per grid
    if (metric_rows, grids, checkpoints, checkpoint_step) != (
        expected_metrics,
        sample_steps,
        expected_checkpoints,
        config.steps,
    ):
        raise RuntimeError(
            f"hooks did not all fire: {metric_rows} metric rows (expected {expected_metrics}), {grids} grids "
            f"({sample_steps}), {checkpoints} checkpoint kept at the last step ({kept}), pointer at {checkpoint_step}"
        )
    shutil.rmtree(runtime.objects_dir / "jobs" / str(job_id), ignore_errors=True)
    return Run(
        side="atelier",
        steps=config.steps,
        batch_size=config.batch_size,
        seconds=seconds,
        d_loss=float(latest["d_loss"]),
        g_loss=float(latest["g_loss"]),
        details={"metric_rows": metric_rows, "grids": grids, "checkpoints": checkpoints},
    )


# -- Measurement -------------------------------------------------------------------------------


def _reference_in_temp_dir(data: torch.Tensor, config: Config) -> Run:
    outf = Path(tempfile.mkdtemp(prefix="atelier-bench-dcgan-"))
    try:
        return run_reference(data, config, outf)
    finally:
        shutil.rmtree(outf, ignore_errors=True)


def measure(
    data: torch.Tensor, config: Config, runtime: AtelierRuntime, *, repeats: int, verbose: bool = False
) -> tuple[list[Run], list[Run]]:
    """An untimed warm-up of each side, then ``repeats`` alternating (reference, Atelier) runs."""
    warmup = replace(config, steps=WARMUP_STEPS, sample_every=1, checkpoint_every=1)
    _reference_in_temp_dir(data, warmup)
    run_atelier(runtime, warmup)
    references: list[Run] = []
    ateliers: list[Run] = []
    for index in range(repeats):
        references.append(_reference_in_temp_dir(data, config))
        ateliers.append(run_atelier(runtime, config))
        if verbose:
            print(f"run {index + 1}/{repeats}: {_describe(references[-1])}; {_describe(ateliers[-1])}", flush=True)
    return references, ateliers


def _describe(run: Run) -> str:
    text = f"{run.side} {run.steps} steps in {run.seconds:.2f} s = {run.images_per_s:.2f} images/s"
    extra = run.details
    if run.side == "reference":
        text += f" (grids, with G on the fixed noise, and epoch saves {extra['saving_s']:.2f} s, {extra['epochs']:g} epochs)"
    else:
        text += (
            f" ({extra['metric_rows']:g} metric rows, {extra['grids']:g} grids, {extra['checkpoints']:g} checkpoints)"
        )
    return text + f", last losses D {run.d_loss:.3f} G {run.g_loss:.3f}"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), host {cpu_model()}"
    return f"{cpu_model()}, nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs)"


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _rates(runs: list[Run]) -> str:
    rates = [r.images_per_s for r in runs]
    return f"{', '.join(f'{v:.2f}' for v in rates)} images/s (median {statistics.median(rates):.2f})"


def main() -> None:
    """Measure both sides, print per-run figures and the medians, and the ratio (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"default: {DEFAULT_STEPS['cuda']} on GPU, {DEFAULT_STEPS['cpu']} on CPU",
    )
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads, both sides")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)  # what the worker's process init does with ATELIER_TORCH_THREADS
    config = Config.for_steps(args.steps or DEFAULT_STEPS[device.type], device)

    print(f"machine: {_machine(device)}; load average {_load()}", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), device {device}", flush=True)
    data = load_builtin(DATASET, image_size=IMAGE_SIZE, channels=CHANNELS)
    print(
        f"data: {DATASET}, {data.shape[0]} images at {IMAGE_SIZE} px; batch {config.batch_size}, nz {config.nz}, "
        f"ngf {config.ngf}, ndf {config.ndf}, Adam {LR:g} betas ({BETA1}, {BETA2}); {config.steps} steps per run, "
        f"grids every {config.sample_every}, Atelier checkpoints every {config.checkpoint_every}, metrics every "
        f"step; reference epoch = {data.shape[0] // config.batch_size} batches",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-gan-"))
    try:
        with atelier_runtime(root, device=device, threads=args.threads) as runtime:
            references, ateliers = measure(data, config, runtime, repeats=args.repeats, verbose=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    reference_rate = statistics.median(r.images_per_s for r in references)
    atelier_rate = statistics.median(r.images_per_s for r in ateliers)
    ratio = atelier_rate / reference_rate
    target = GPU_TARGET if device.type == "cuda" else CPU_TARGET
    print(f"reference (pytorch/examples dcgan): {_rates(references)}")
    print(f"atelier (gan.train via run_job, all hooks): {_rates(ateliers)}")
    print(f"target on {device.type}: ratio >= {target:g}; load average after {_load()}")
    print(f"ratio (Atelier images/s / reference images/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
