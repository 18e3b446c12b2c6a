"""pytorch/examples ``dcgan/main.py``, reimplemented: the reference loop that ``make bench-gan`` and
``make gpu-check`` measure Atelier against, and the benchmark's shape, schedule and job params.

Pure PyTorch (and the params model): no database, so ``bench/gpu_throughput.py`` runs it on a
machine without Postgres. ``bench/gan_speed.py``'s docstring defines the reference loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision.utils as vutils
from torch import nn

from shared.jobs.gan_train import GanTrainParams

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
def cudnn_benchmark() -> Iterator[None]:
    """cudnn.benchmark = True, as the reference sets it, for the reference's run only."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def sync(device: torch.device) -> None:
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
    with cudnn_benchmark(), (outf / "log.txt").open("w") as log:
        sync(device)
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
        sync(device)
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
