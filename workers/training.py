"""The toolkit every training loop shares: the speed path (and its GPU-only choices: fused Adam,
cuDNN's autotuner, host copies that do not block, an opt-in compiled step), device-side metric logs
with their divergence watch, the flush cadence, the divergence error, and artifact kinds and content types.

A loop keeps its logged metrics on the device and reads them back in one transfer per flush
(every FLUSH_STEPS logged steps or FLUSH_INTERVAL_S, and before anything that samples,
evaluates, checkpoints or stops), where divergence is checked too. So on a GPU a loop does not
wait for the device at every step, and a diverged model is never persisted. Pure PyTorch: no
Celery, SQL or S3 (invariant 6).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, cast

import torch
from torch import nn

FLUSH_STEPS: Final = 50  # logged steps whose metrics are read back from the device at once
FLUSH_INTERVAL_S: Final = 1.0  # ... or at least this often, so progress, metrics and warnings stay fresh

# Artifact kinds (workers/runtime.py files each under its section) and content types.
SAMPLE_KIND: Final = "sample"
OUTPUT_KIND: Final = "output"
PLOT_KIND: Final = "plot"
WEIGHTS_KIND: Final = "weights"
PNG_CONTENT_TYPE: Final = "image/png"
NPY_CONTENT_TYPE: Final = "application/x-npy"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"
# An opt-in compiled step on CUDA: Triton's autotuned fused kernels; CUDA graphs left out (never run on a GPU yet).
CUDA_COMPILE_MODE: Final = "max-autotune-no-cudagraphs"
COMPILE_BACKEND: Final = "inductor"
TRITON_MIN_CAPABILITY: Final = (7, 0)  # the oldest GPUs torch.compile's Triton kernels run on


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the run stops instead of training on garbage."""

    def __init__(self, *, what: str, step: int, losses: dict[str, float], advice: str) -> None:
        bad = ", ".join(f"{name}={value:g}" for name, value in losses.items() if not math.isfinite(value))
        super().__init__(f"{what} diverged at step {step}: non-finite loss ({bad}); {advice}")
        self.step = step
        self.losses = losses


@dataclass(frozen=True)
class SpeedPath:
    """bf16 autocast of the nets' forward passes (losses in fp32) and channels_last, for CUDA.

    ``precision="auto"`` turns both on for a CUDA device with bf16 and leaves CPU runs in fp32;
    "bf16" forces autocast anywhere (CPU included), "fp32" turns it off.
    """

    bf16: bool
    channels_last: bool
    device_type: str

    @classmethod
    def of(cls, precision: str, device: torch.device) -> SpeedPath:
        """The path for ``precision`` (auto, bf16, fp32) on ``device``."""
        cuda = device.type == "cuda"
        bf16 = precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported())
        return cls(bf16=bf16, channels_last=cuda, device_type=device.type)

    @property
    def precision(self) -> str:
        """What runs: "bf16" or "fp32"."""
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> torch.autocast:
        """The autocast context of this path (a no-op when bf16 is off)."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)


def fused_adam(device: torch.device) -> bool | None:
    """Adam's ``fused`` flag on ``device``: the fused kernel on CUDA (one launch per step for all
    parameters, no host sync); torch's default elsewhere, whose CPU results the resume tests hold."""
    return True if device.type == "cuda" else None


@contextlib.contextmanager
def cudnn_autotune(device: torch.device) -> Iterator[None]:
    """On CUDA, cuDNN's autotuner for the loop's fixed shapes (``torch.backends.cudnn.benchmark``), restored after."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``. A CPU tensor bound for CUDA goes through pinned memory without blocking: a
    plain copy from pageable memory waits until the GPU has finished all its queued work."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


Net = TypeVar("Net", bound=nn.Module)


@dataclass(frozen=True)
class StepCompile:
    """The opt-in ``torch.compile`` of a loop's fixed-shape passes: inductor's default on CPU, autotuned
    Triton kernels on a CUDA GPU that Triton supports; ``note`` says why an asked-for compile does not run."""

    enabled: bool
    mode: str | None = None
    note: str | None = None

    @classmethod
    def of(cls, asked: bool, device: torch.device) -> StepCompile:
        """What ``compile: asked`` runs on ``device``."""
        if not asked:
            return cls(enabled=False)
        if device.type == "cuda":
            capability = torch.cuda.get_device_capability(device)
            if tuple(capability) < TRITON_MIN_CAPABILITY:
                major, minor = capability
                return cls(
                    enabled=False,
                    note=f"compile needs a GPU of compute capability 7.0 or newer (Triton); this one is "
                    f"{major}.{minor}, so the steps run uncompiled",
                )
            return cls(enabled=True, mode=CUDA_COMPILE_MODE)
        return cls(enabled=True)

    def apply(self, net: Net) -> Net:
        """``net`` compiled (sharing its parameters and buffers), or ``net`` itself when off."""
        if not self.enabled:
            return net
        return cast(Net, torch.compile(net, mode=self.mode, backend=COMPILE_BACKEND))


class DivergenceWatch:
    """Remembers the first step with a non-finite loss without a host sync per step; ``check`` syncs."""

    def __init__(self, names: Sequence[str], device: torch.device, *, what: str, advice: str) -> None:
        self.names = tuple(names)
        self.what, self.advice = what, advice
        self._first_step = torch.zeros((), dtype=torch.int64, device=device)
        self._losses = torch.zeros(len(self.names), device=device)

    def observe(self, step: int, losses: torch.Tensor) -> None:
        """Note ``losses`` (in ``names`` order) of ``step``."""
        first_bad = (self._first_step == 0) & ~torch.isfinite(losses).all()
        self._first_step = torch.where(first_bad, step, self._first_step)
        self._losses = torch.where(first_bad, losses, self._losses)

    def first_bad_step(self) -> int:
        """The first step with a non-finite loss, 0 if none (a sync)."""
        return int(self._first_step.item())

    def check(self) -> None:
        """Raise DivergenceError if any observed loss was NaN or infinite."""
        step = self.first_bad_step()
        if step:
            values = dict(zip(self.names, self._losses.tolist(), strict=True))
            raise DivergenceError(what=self.what, step=step, losses=values, advice=self.advice)


Tag = TypeVar("Tag")


class MetricLog(Generic[Tag]):
    """Logged steps' metrics, kept on the device and read back in one transfer per flush.

    ``add`` queues a step's device values (in ``names`` order) with host values and a tag of the
    loop's; ``flush`` reports every queued step before the watch's first non-finite one through
    ``report(step, metrics, tag)``, then raises DivergenceError if there was one.
    """

    def __init__(
        self,
        names: Sequence[str],
        watch: DivergenceWatch,
        report: Callable[[int, dict[str, float], Tag], None],
        *,
        last: dict[str, float] | None = None,
    ) -> None:
        self.names = tuple(names)
        self.watch = watch
        self._report = report
        self.pending: list[tuple[int, torch.Tensor, Sequence[float], Tag]] = []
        self.last: dict[str, float] = last if last is not None else {}
        self.flushed_at = time.monotonic()

    def add(self, step: int, on_device: torch.Tensor, on_host: Sequence[float], tag: Tag) -> None:
        """Queue one logged step (no sync)."""
        self.pending.append((step, on_device, on_host, tag))

    def due(self) -> bool:
        """Whether enough steps or time have gathered for a flush."""
        return len(self.pending) >= FLUSH_STEPS or time.monotonic() - self.flushed_at >= FLUSH_INTERVAL_S

    def flush(self) -> None:
        """Report the queued steps (up to a divergence), then raise if the run diverged."""
        self.flushed_at = time.monotonic()
        bad = self.watch.first_bad_step()
        if self.pending:
            rows = torch.stack([values.float() for _, values, _, _ in self.pending]).tolist()
            for (step, _, host, tag), row in zip(self.pending, rows, strict=True):
                if bad and step >= bad:
                    break
                metrics = dict(zip(self.names, [*row, *host], strict=True))
                self._report(step, metrics, tag)
                self.last = metrics
            self.pending.clear()
        if bad:
            self.watch.check()
