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
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torchvision.utils as vutils
from sqlalchemy import func, select
from torch import nn

from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.models import Artifact, Job, Metric
from shared.db.session import transaction
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.params import QUEUE_GPU
from shared.jobs.states import JobState
from tests.support import services
from workers.engines import execute
from workers.gan.data import load_builtin
from workers.gan.loop import METRIC_NAMES, SAMPLE_ARTIFACT
from workers.runtime import WorkerContext, run_job
from workers.training import SAMPLE_KIND

DATASET = "digits"
IMAGE_SIZE = 64  # the reference's architecture is the 64 x 64 one
CHANNELS = 1  # nc: the digits are grayscale
BATCH_SIZE = 64
NZ = 100
NGF = 64
NDF = 64
LR = 2e-4
BETA1 = 0.5
BETA2 = 0.999
SEED = 0
REAL_LABEL = 1.0
FAKE_LABEL = 0.0
CONV_STD = 0.02
BN_MEAN = 1.0
LEAKY_SLOPE = 0.2
# The schedules: the GPU one, and the CPU one scaled down by CPU_SCALE to about 10 minutes in all.
GPU_STEPS = 1000
CPU_SCALE = 25
CHECKPOINT_FRACTION = 2  # a checkpoint every steps / 2: at 500 of 1000
SAMPLE_FRACTION = 10  # a grid every steps / 10: every 100 of 1000
DEFAULT_STEPS = {"cuda": GPU_STEPS, "cpu": GPU_STEPS // CPU_SCALE}
DEFAULT_REPEATS = 3
DEFAULT_THREADS = 1
WARMUP_STEPS = 2
CPU_TARGET = 0.95
CPU = torch.device("cpu")
GPU_TARGET = 3.0
GRID_PATTERN = SAMPLE_ARTIFACT.split("{", 1)[0] + "%"  # the periodic grids, not the final pictures


@dataclass(frozen=True)
class Config:
    """One run's shape and schedule; the defaults are the benchmark's (pytorch/examples dcgan at 64 px)."""

    steps: int
    sample_every: int
    checkpoint_every: int
    device: torch.device = CPU
    batch_size: int = BATCH_SIZE
    nz: int = NZ
    ngf: int = NGF
    ndf: int = NDF

    @classmethod
    def for_steps(cls, steps: int, device: torch.device, **sizes: int) -> Config:
        """The GPU schedule's proportions at ``steps``: a checkpoint every steps/2, a grid every steps/10."""
        return cls(
            steps=steps,
            sample_every=max(1, steps // SAMPLE_FRACTION),
            checkpoint_every=max(1, steps // CHECKPOINT_FRACTION),
            device=device,
            **sizes,
        )


@dataclass
class Run:
    """One timed training run of one side."""

    side: str
    steps: int
    batch_size: int
    seconds: float
    d_loss: float
    g_loss: float
    details: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Training images per second: steps * batch / seconds."""
        return self.steps * self.batch_size / self.seconds


# -- The reference: pytorch/examples dcgan/main.py, reimplemented ----------------------------


class RefGenerator(nn.Module):
    """pytorch/examples' Generator (64 x 64)."""

    def __init__(self, nz: int, ngf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            # input is Z, going into a convolution
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, nz, 1, 1) to images (N, nc, 64, 64)."""
        out: torch.Tensor = self.main(z)
        return out


class RefDiscriminator(nn.Module):
    """pytorch/examples' Discriminator (64 x 64), ending in a Sigmoid."""

    def __init__(self, ndf: int, nc: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One probability per image, shape (N,)."""
        return self.main(x).view(-1, 1).squeeze(1)


def ref_weights_init(m: nn.Module) -> None:
    """pytorch/examples' weights_init: by class name, conv weights ~ N(0, 0.02), BN weights ~ N(1, 0.02)."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, CONV_STD)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, BN_MEAN, CONV_STD)
        nn.init.zeros_(m.bias)


@contextlib.contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark = True, as the reference sets it, for the reference's run only."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_reference(data: torch.Tensor, config: Config, outf: Path) -> Run:
    """The dcgan example's training loop for ``config.steps`` iterations; writes its files under ``outf``."""
    device, batch_size, nz = config.device, config.batch_size, config.nz
    batches_per_epoch = data.shape[0] // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"the dataset has {data.shape[0]} images, fewer than one batch of {batch_size}")
    nc = data.shape[1]
    saving = 0.0
    torch.manual_seed(SEED)
    with _cudnn_benchmark(), (outf / "log.txt").open("w") as log:
        _sync(device)
        started = time.perf_counter()
        net_g = RefGenerator(nz, config.ngf, nc).to(device)  # netG
        net_g.apply(ref_weights_init)
        net_d = RefDiscriminator(config.ndf, nc).to(device)  # netD
        net_d.apply(ref_weights_init)
        criterion = nn.BCELoss()
        fixed_noise = torch.randn(batch_size, nz, 1, 1, device=device)
        optimizer_d = torch.optim.Adam(net_d.parameters(), lr=LR, betas=(BETA1, BETA2))
        optimizer_g = torch.optim.Adam(net_g.parameters(), lr=LR, betas=(BETA1, BETA2))
        niter = -(-config.steps // batches_per_epoch)
        iteration = 0
        err_d = err_g = torch.zeros(())
        for epoch in range(niter):
            permutation = torch.randperm(data.shape[0])  # DataLoader(shuffle=True), full batches only
            for i in range(min(batches_per_epoch, config.steps - iteration)):
                ############################
                # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
                ###########################
                # train with real
                net_d.zero_grad()
                real_cpu = data.index_select(0, permutation[i * batch_size : (i + 1) * batch_size]).to(device)
                label = torch.full((batch_size,), REAL_LABEL, dtype=real_cpu.dtype, device=device)
                output = net_d(real_cpu)
                err_d_real = criterion(output, label)
                err_d_real.backward()
                d_x = output.mean().item()
                # train with fake
                noise = torch.randn(batch_size, nz, 1, 1, device=device)
                fake = net_g(noise)
                label.fill_(FAKE_LABEL)
                output = net_d(fake.detach())
                err_d_fake = criterion(output, label)
                err_d_fake.backward()
                d_g_z1 = output.mean().item()
                err_d = err_d_real + err_d_fake
                optimizer_d.step()
                ############################
                # (2) Update G network: maximize log(D(G(z)))
                ###########################
                net_g.zero_grad()
                label.fill_(REAL_LABEL)  # fake labels are real for generator cost
                output = net_d(fake)
                err_g = criterion(output, label)
                err_g.backward()
                d_g_z2 = output.mean().item()
                optimizer_g.step()
                log.write(
                    f"[{epoch}/{niter}][{i}/{batches_per_epoch}] Loss_D: {err_d.item():.4f} Loss_G: "
                    f"{err_g.item():.4f} D(x): {d_x:.4f} D(G(z)): {d_g_z1:.4f} / {d_g_z2:.4f}\n"
                )
                if iteration % config.sample_every == 0:
                    mark = time.perf_counter()
                    vutils.save_image(real_cpu, outf / "real_samples.png", normalize=True)
                    fake = net_g(fixed_noise)
                    vutils.save_image(fake.detach(), outf / f"fake_samples_epoch_{epoch:03d}.png", normalize=True)
                    saving += time.perf_counter() - mark
                iteration += 1
            # do checkpointing
            mark = time.perf_counter()
            torch.save(net_g.state_dict(), outf / f"netG_epoch_{epoch}.pth")
            torch.save(net_d.state_dict(), outf / f"netD_epoch_{epoch}.pth")
            saving += time.perf_counter() - mark
        _sync(device)
        seconds = time.perf_counter() - started
    return Run(
        side="reference",
        steps=iteration,
        batch_size=batch_size,
        seconds=seconds,
        d_loss=err_d.item(),
        g_loss=err_g.item(),
        details={"saving_s": saving, "epochs": float(niter)},
    )


# -- Atelier: a gan.train job through the worker runtime ---------------------------------------


def atelier_params(config: Config) -> GanTrainParams:
    """The lesson preset as the reference's DCGAN, with every hook on."""
    return GanTrainParams(
        preset="lesson",
        dataset=DATASET,
        arch="dcgan",
        image_size=IMAGE_SIZE,
        channels=CHANNELS,
        steps=config.steps,
        batch_size=config.batch_size,
        loss="bce",
        lr_g=LR,
        lr_d=LR,
        beta1=BETA1,
        beta2=BETA2,
        nz=config.nz,
        ngf=config.ngf,
        ndf=config.ndf,
        seed=SEED,
        log_every=1,
        sample_every=config.sample_every,
        checkpoint_every=config.checkpoint_every,
        image_metrics=False,  # the reference evaluates nothing; fd/kid/precision/recall are extra work
    )


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
    _sync(config.device)
    started = time.perf_counter()
    outcome = run_job(ctx, job_id, execute)
    _sync(config.device)
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
    checkpoints = len(list(checkpoint_dir.glob("*.pt")))
    # Both fire at every multiple of their interval and at the last step.
    sample_steps = -(-config.steps // config.sample_every)
    expected_checkpoints = -(-config.steps // config.checkpoint_every)
    expected_metrics = config.steps * len(METRIC_NAMES) + sample_steps  # + one diversity value per grid
    if (metric_rows, grids, checkpoints, checkpoint_step) != (
        expected_metrics,
        sample_steps,
        expected_checkpoints,
        config.steps,
    ):
        raise RuntimeError(
            f"hooks did not all fire: {metric_rows} metric rows (expected {expected_metrics}), {grids} grids "
            f"({sample_steps}), {checkpoints} checkpoints ({expected_checkpoints}), last at {checkpoint_step}"
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


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), host {_cpu_model()}"
    return f"{_cpu_model()}, nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs)"


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
