"""Throughput for ``make gpu-check``: Atelier's GAN step against pytorch/examples dcgan, its images/s
and share of the card's bf16 peak at three batch sizes, and the style-transfer speed-up and times.

``run_throughput(device, quick=..., out=...)`` returns a JSON-able dict (``summary`` is one line) and
writes ``throughput.json``, the bs64 run's final sample grid and the 512 px style output under ``out``.
It prints nothing. ``quick=True`` (CI's CPU dry run) runs every code path at toy sizes in seconds.

**GAN, the ratio.** The same comparison as ``make bench-gan`` (bench/gan_speed.py, whose docstring
defines the reference; the reference itself is bench/dcgan_reference.py, shared by both): the
reference loop against Atelier's ``workers.gan.loop.train`` on the lesson preset at 64 px, batch 64,
nz 100, ngf = ndf = 64, the digits (1,797 images), metrics every step, a grid every steps / 10 and
a checkpoint every steps / 2, image metrics off, on the same device and data, in the same process,
runs alternating (reference, Atelier, ...), each side's median images/s. What differs from
``make bench-gan``, which runs a real gan.train job through ``run_job`` on Postgres:
- no Postgres: no claim, no heartbeat thread, no fenced transactions, no metric upserts, no job
  events, no checkpoint-pointer commit, no final state change; no Celery, no Prometheus meter, no
  watchdog, no artifact or runtime limits, no memory admission;
- the hooks (``StoreHooks`` below) keep what matters for the loop's speed: metrics are buffered
  under a lock exactly as ``JobRunner.report_metrics`` buffers them, and the buffer is drained when
  a checkpoint is stored (where the runtime commits the metrics with the pointer) and at the end;
  progress is recorded per step; every checkpoint, grid, plot and ``generator.pt`` is written to
  the real ``LocalObjectStore`` (shared/storage.py, atomic rename) under the runtime's keys;
- the dataset is put on the GPU before the timed call, as the executor does for a dataset that fits
  (workers/engines.py ``_resident``), instead of being looked up inside it;
- on a GPU 1000 steps and 3 repeats, as bench-gan; after each Atelier run the hooks' counts
  (metric rows, grids, checkpoints) are checked, so a run with a hook silently off fails.
Timed, each side: one complete run, wall clock with the device synchronised before and after
(the reference: building its nets, every iteration, grid and torch.save; Atelier: the hooks and
``train()``, nets to final artifacts, and the final drain). Not timed: loading the data once, an
untimed 2-step warm-up of each side (lazy imports, cuDNN autotuning, allocator).

**GAN, batch sizes.** Atelier alone, the same job at batch 64, 256 and 1024 (same schedule
proportions, all hooks), each after an untimed warm-up and a 20-step calibration run that sizes
the timed run to about ``batch_seconds``. The whole run's images/s is the figure (every hook
included); the steps' own rate is kept too: the timed run against the calibration run, whose
per-run costs (nets, about ten grids and two checkpoints, the final artifacts) are the same.
FLOPs per image are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over a
1-step and a 2-step ``train()`` at batch 2 (conv and matmul FLOPs, forward and backward, of D on
the real and the fake batch, G, and the G step through D); the difference is one step, the
fixed costs (final grid, interpolation strip) cancel. Achieved TFLOP/s = FLOPs per
image x images/s, as a share of the card's bf16 peak measured in the same run: an n x n bf16
matmul (n = 8192 on a GPU) repeated for ``matmul_seconds``, synchronised. On a CPU, which trains
in fp32 and mostly emulates bf16, the peak is the faster of the bf16 and the fp32 matmul.

**GAN, compiled.** With ``compile`` on (params.compile: max-autotune-no-cudagraphs on CUDA), the
bs64 and bs1024 runs again, in a child process killed after ``compile_timeout_s`` (a compile that
hangs cannot stall the check); skipped in quick mode (inductor on a 2-core CPU takes minutes).

**Style.** bench/style.py's measurement (the PyTorch tutorial's L-BFGS against Atelier's
coarse-to-fine L-BFGS on the same random VGG19 weights and images) at 512 px: the speed-up. Then
one ``transfer()`` at the ``gatys`` preset (VGG19, avg pooling, L-BFGS from noise, 300 steps) with
random weights at 512 and at 1024 px, with the store hooks, each timed as a whole (encoder build
included) after an untimed 64 px warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import style as style_bench
from bench.dcgan_reference import CHANNELS, DATASET, IMAGE_SIZE, Config, Run, atelier_params, run_reference, sync
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from shared.storage import LocalObjectStore, job_key
from workers.gan.data import load_builtin
from workers.gan.loop import FINAL_SAMPLE_ARTIFACT, METRIC_NAMES, SAMPLE_ARTIFACT
from workers.gan.loop import train as gan_train
from workers.style.images import load_builtin_image
from workers.style.transfer import OUTPUT_ARTIFACT
from workers.style.transfer import transfer as style_transfer

T = TypeVar("T")

RESULT_FILE: Final = "throughput.json"
GRID_FILE: Final = "gan-bs{batch}-final.png"
STYLE_FILE: Final = "style-{size}px.png"
COMPILE_FILE: Final = "compiled.json"
# The runtime's object sections (workers/runtime.py ARTIFACT_SECTIONS) and key names, for the store hooks.
SECTIONS: Final = {"sample": "samples", "checkpoint": "checkpoints"}
OTHER_SECTION: Final = "outputs"
ATTEMPT: Final = 1
WARMUP_STEPS: Final = 2
FLOP_BATCH: Final = 2  # train() is counted at this batch; conv and matmul FLOPs scale linearly with it
TFLOP: Final = 1e12
MATMUL_WINDOW_S: Final = 0.05
STYLE_CONTENT, STYLE_STYLE = style_bench.CONTENT, style_bench.STYLE
STYLE_WARMUP_SIZE: Final = 64
STYLE_WARMUP_STEPS: Final = 3
COMPILE_TIMEOUT_S: Final = 150.0  # both compiled runs, compiles included; what is done by then is kept
COMPILE_WARMUP_STEPS: Final = 5  # the compile happens in the first; the rest settle autotuning


@dataclass(frozen=True)
class Plan:
    """Sizes and time boxes of one run (quick: CI's dry run; full: a GPU)."""

    ratio_steps: int
    ratio_repeats: int
    ratio_batch: int
    nz: int
    ngf: int
    ndf: int
    batch_sizes: tuple[int, ...]
    batch_image_size: int
    batch_seconds: float  # aim: each timed batch-size run lasts about this long ...
    batch_min_steps: int  # ... within these bounds
    batch_max_steps: int
    matmul_n: int
    matmul_seconds: float
    style_speed_size: int
    style_speed_repeats: int
    style_sizes: tuple[int, ...]
    style_steps: int | None  # None: the preset's (300)
    compile_batches: tuple[int, ...]  # empty: no compiled runs
    warmup: bool = True  # untimed warm-up runs (off in quick mode: its figures only show the code runs)
    calibration_steps: int = 20  # a batch-size run of these steps sizes the timed one (after the warm-up)
    style_evaluations: int = style_bench.REFERENCE_EVALUATIONS  # the tutorial reference's L-BFGS evaluations
    style_stricter: bool = True  # also bench-style's stricter speed-up (the reference's best loss)


QUICK = Plan(
    ratio_steps=2,
    ratio_repeats=1,
    ratio_batch=8,
    nz=8,
    ngf=8,
    ndf=8,
    batch_sizes=(4, 8, 16),
    batch_image_size=16,
    batch_seconds=0.0,
    batch_min_steps=2,
    batch_max_steps=2,
    matmul_n=128,
    matmul_seconds=0.1,
    style_speed_size=32,
    style_speed_repeats=1,
    style_sizes=(32, 48),
    style_steps=2,
    compile_batches=(),
    warmup=False,
    style_evaluations=10,
    style_stricter=False,
)
GPU = Plan(
    ratio_steps=1000,
    ratio_repeats=3,
    ratio_batch=64,
    nz=100,
    ngf=64,
    ndf=64,
    batch_sizes=(64, 256, 1024),
    batch_image_size=IMAGE_SIZE,
    batch_seconds=8.0,
    batch_min_steps=60,
    batch_max_steps=3000,
    matmul_n=8192,
    matmul_seconds=1.5,
    style_speed_size=512,
    style_speed_repeats=2,
    style_sizes=(512, 1024),
    style_steps=None,
    compile_batches=(64, 1024),
)
# A full run on a CPU (to set beside a GPU's figures): the GPU's shapes, but only as many steps and
# batch sizes as fit in minutes on a few cores (a batch of 1024 at 64 px is minutes a step there),
# bench-style's CPU size without its stricter search, and transfers at the sizes bench-style uses on a CPU.
CPU_FULL = replace(
    GPU,
    ratio_steps=4,
    ratio_repeats=1,
    batch_sizes=(64,),
    batch_seconds=15.0,
    batch_min_steps=4,
    batch_max_steps=200,
    calibration_steps=2,
    matmul_n=512,  # bf16 is emulated on most CPUs: a 1024 x 1024 product takes seconds
    matmul_seconds=1.0,
    style_speed_size=128,
    style_speed_repeats=1,
    style_stricter=False,
    style_sizes=(128, 256),
    style_steps=50,
    compile_batches=(),
)


def plan_for(device: torch.device, *, quick: bool) -> Plan:
    """The plan for ``device``: QUICK when asked, else the GPU's or the CPU's full one."""
    if quick:
        return QUICK
    return GPU if device.type == "cuda" else CPU_FULL


# -- Hooks: the runtime's buffering and the real local object store, no database -------------


class StoreHooks:
    """TrainHooks on a LocalObjectStore, buffering metrics as workers/runtime.py's JobRunner does."""

    def __init__(self, store: LocalObjectStore, job: str) -> None:
        self.store = store
        self.job = job
        self._lock = threading.Lock()
        self._buffer: list[tuple[str, int, float]] = []
        self.latest: dict[str, float] = {}
        self.rows = 0  # metric rows drained (committed, in the runtime)
        self.progress: tuple[int, int] = (0, 0)
        self.checkpoints: list[str] = []
        self.artifacts: dict[str, str] = {}
        self.warnings: list[str] = []

    def report_metrics(self, step: int, values: dict[str, float]) -> None:
        """Buffer the values, as JobRunner.report_metrics does."""
        with self._lock:
            for name, value in values.items():
                self._buffer.append((name, step, float(value)))
                self.latest[name] = float(value)

    def report_progress(self, step: int, total: int) -> None:
        """Remember progress."""
        with self._lock:
            self.progress = (step, total)

    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Store the checkpoint, then drain the metrics (the runtime commits them with the pointer)."""
        key = job_key(self.job, "checkpoints", f"a{ATTEMPT}-step-{step:08d}.pt")
        self.store.put(key, data)
        self.checkpoints.append(key)
        self.drain()

    def load_checkpoint(self) -> bytes | None:
        """Always a fresh start."""
        return None

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Store the artifact under the runtime's key for it."""
        key = job_key(self.job, SECTIONS.get(kind, OTHER_SECTION), f"a{ATTEMPT}/{name}")
        self.store.put(key, data, content_type=content_type)
        self.artifacts[name] = key

    def warn(self, message: str) -> None:
        """Keep the warning."""
        if message not in self.warnings:
            self.warnings.append(message)

    def should_stop(self) -> str | None:
        """Never."""
        return None

    def drain(self) -> int:
        """Take the buffered rows (a flush); returns how many."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        self.rows += len(batch)
        return len(batch)


# -- Measuring ----------------------------------------------------------------------------------


def _timed(device: torch.device, fn: Callable[[], T]) -> tuple[float, T]:
    sync(device)
    started = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - started, value


def matmul_tflops(device: torch.device, *, n: int, seconds: float, dtype: torch.dtype = torch.bfloat16) -> float:
    """The peak matmul rate of ``device`` in TFLOP/s: n x n products in ``dtype`` for ``seconds``, timed in
    synchronised windows of at least MATMUL_WINDOW_S; the best window (a busy neighbour or a clock ramp
    only lowers some)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: the kernel choice and the clocks
        torch.mm(a, b, out=c)
    sync(device)
    best, chunk = 0.0, 1
    deadline = time.perf_counter() + seconds
    while True:
        started = time.perf_counter()
        for _ in range(chunk):
            torch.mm(a, b, out=c)
        sync(device)
        now = time.perf_counter()
        if now - started >= MATMUL_WINDOW_S:
            best = max(best, 2 * n**3 * chunk / (now - started) / TFLOP)
        else:
            chunk *= 2
        if now >= deadline and best > 0:
            return best


def _data(image_size: int) -> torch.Tensor:
    return load_builtin(DATASET, image_size=image_size, channels=CHANNELS)


def _params(config: Config, image_size: int, **overrides: Any) -> GanTrainParams:
    """bench-gan's job (the lesson preset, every hook on) at ``image_size`` px."""
    values = atelier_params(config).model_dump()
    return GanTrainParams(**(values | {"image_size": image_size} | overrides))


@dataclass
class AtelierRun:
    """One timed Atelier run and what its hooks recorded."""

    batch_size: int
    steps: int
    seconds: float
    rows: int
    grids: int
    checkpoints: int
    d_loss: float
    g_loss: float

    @property
    def images_per_s(self) -> float:
        """Training images per second."""
        return self.steps * self.batch_size / self.seconds


def run_atelier(
    params: GanTrainParams, data: torch.Tensor, device: torch.device, store_root: Path, *, keep_grid: Path | None = None
) -> AtelierRun:
    """``train()`` with StoreHooks (timed), then a check that every hook fired as often as scheduled.

    ``keep_grid``: where to copy the run's final sample grid.
    """
    job = f"bench-{time.monotonic_ns()}"
    store = LocalObjectStore(store_root)
    resident = data.to(device)
    sync(device)
    started = time.perf_counter()
    hooks = StoreHooks(store, job)
    gan_train(params, resident, hooks, device=device)
    hooks.drain()
    sync(device)
    seconds = time.perf_counter() - started
    if keep_grid is not None:
        shutil.copyfile(store.root / hooks.artifacts[FINAL_SAMPLE_ARTIFACT], keep_grid)
    grids = sum(1 for name in hooks.artifacts if name.startswith(SAMPLE_ARTIFACT.split("{", 1)[0]))
    expected_grids = -(-params.steps // params.sample_every)
    expected_checkpoints = -(-params.steps // params.checkpoint_every)
    expected_rows = -(-params.steps // params.log_every) * len(METRIC_NAMES) + expected_grids  # + diversity
    if (hooks.rows, grids, len(hooks.checkpoints)) != (expected_rows, expected_grids, expected_checkpoints):
        raise RuntimeError(
            f"hooks did not all fire: {hooks.rows} metric rows (expected {expected_rows}), {grids} grids "
            f"({expected_grids}), {len(hooks.checkpoints)} checkpoints ({expected_checkpoints})"
        )
    return AtelierRun(
        batch_size=params.batch_size,
        steps=params.steps,
        seconds=seconds,
        rows=hooks.rows,
        grids=grids,
        checkpoints=len(hooks.checkpoints),
        d_loss=hooks.latest["d_loss"],
        g_loss=hooks.latest["g_loss"],
    )


def flops_per_image(params: GanTrainParams, device: torch.device) -> float:
    """Conv and matmul FLOPs of one training step per image (forward and backward), counted by FlopCounterMode."""
    data = _data(params.image_size).to(device)
    counts = []
    for steps in (1, 2):
        run = params.model_copy(
            update={"steps": steps, "batch_size": FLOP_BATCH, "sample_every": steps, "checkpoint_every": steps}
        )
        counter = FlopCounterMode(display=False)
        with tempfile.TemporaryDirectory(prefix="atelier-flops-") as root, counter:
            gan_train(run, data, StoreHooks(LocalObjectStore(Path(root)), "flops"), device=device)
        counts.append(counter.get_total_flops())
    return (counts[1] - counts[0]) / FLOP_BATCH


@dataclass
class Ratio:
    """bench-gan's comparison: each side's runs and the ratio of the medians."""

    reference: list[float]
    atelier: list[float]
    steps: int

    @property
    def ratio(self) -> float:
        """Atelier's median images/s / the reference's."""
        return statistics.median(self.atelier) / statistics.median(self.reference)


def measure_ratio(plan: Plan, device: torch.device, root: Path, out: Path) -> Ratio:
    """Alternating reference and Atelier runs at 64 px, after an untimed warm-up of each."""
    sizes = {"batch_size": plan.ratio_batch, "nz": plan.nz, "ngf": plan.ngf, "ndf": plan.ndf}
    config = Config.for_steps(plan.ratio_steps, device, **sizes)
    warmup = replace(config, steps=WARMUP_STEPS, sample_every=1, checkpoint_every=1)
    data = _data(IMAGE_SIZE)

    def reference(run_config: Config) -> Run:
        with tempfile.TemporaryDirectory(prefix="atelier-ref-", dir=root) as outf:
            return run_reference(data, run_config, Path(outf))

    def atelier(run_config: Config) -> AtelierRun:
        grid = out / GRID_FILE.format(batch=run_config.batch_size)
        with tempfile.TemporaryDirectory(prefix="atelier-gan-", dir=root) as store_root:
            return run_atelier(_params(run_config, IMAGE_SIZE), data, device, Path(store_root), keep_grid=grid)

    if plan.warmup:
        reference(warmup)
        atelier(warmup)
    references, ateliers = [], []
    for _ in range(plan.ratio_repeats):
        references.append(reference(config).images_per_s)
        ateliers.append(atelier(config).images_per_s)
    return Ratio(reference=references, atelier=ateliers, steps=config.steps)


@dataclass
class BatchRate:
    """Atelier at one batch size: its rate and what that is of the card's bf16 peak.

    ``images_per_s`` is the whole run's, every hook included. ``step_images_per_s`` is the rate of
    the steps alone: the timed run against the shorter calibration run, whose per-run costs (nets,
    ten grids, two checkpoints, the final artifacts) are the same; None in quick mode.
    """

    batch_size: int
    steps: int
    seconds: float
    images_per_s: float
    tflops: float
    share_of_peak: float
    step_images_per_s: float | None = None
    step_share_of_peak: float | None = None


def _batch_steps(plan: Plan, calibration_seconds: float) -> int:
    """Steps for a timed run of about ``plan.batch_seconds``, from the calibration run's (pessimistic) time per step."""
    per_step = calibration_seconds / plan.calibration_steps
    wanted = int(plan.batch_seconds / per_step) if per_step > 0 else plan.batch_max_steps
    return max(plan.batch_min_steps, min(plan.batch_max_steps, wanted))


def measure_batches(
    plan: Plan, device: torch.device, root: Path, *, flops: float, peak: float, compile_step: bool = False
) -> list[BatchRate]:
    """Atelier's images/s at each of ``plan.batch_sizes`` (all hooks), each after an untimed warm-up."""
    return [
        measure_batch(plan, device, root, batch, flops=flops, peak=peak, compile_step=compile_step)
        for batch in plan.batch_sizes
    ]


def measure_batch(
    plan: Plan,
    device: torch.device,
    root: Path,
    batch: int,
    *,
    flops: float,
    peak: float,
    compile_step: bool = False,
    warmup_steps: int = WARMUP_STEPS,
    steps: int | None = None,
) -> BatchRate:
    """Atelier's images/s at ``batch``: an untimed warm-up of ``warmup_steps``, a calibration run of
    ``plan.calibration_steps`` that sizes the timed run (``steps`` overrides), then the timed run."""
    data = _data(plan.batch_image_size)
    sizes = {"batch_size": batch, "nz": plan.nz, "ngf": plan.ngf, "ndf": plan.ndf}
    extra = {"compile": True} if compile_step else {}

    def run(steps: int) -> AtelierRun:
        config = Config.for_steps(steps, device, **sizes)
        with tempfile.TemporaryDirectory(prefix="atelier-gan-", dir=root) as store_root:
            return run_atelier(_params(config, plan.batch_image_size, **extra), data, device, Path(store_root))

    calibration: AtelierRun | None = None
    if plan.warmup:
        run(warmup_steps)  # one-offs: cuDNN autotuning for these shapes, the allocator, a compile
        calibration = run(plan.calibration_steps)
        steps = steps or _batch_steps(plan, calibration.seconds)
    steps = steps or plan.batch_min_steps
    timed = run(steps)
    tflops = flops * timed.images_per_s / TFLOP
    rate = BatchRate(
        batch_size=batch,
        steps=steps,
        seconds=timed.seconds,
        images_per_s=timed.images_per_s,
        tflops=tflops,
        share_of_peak=tflops / peak if peak > 0 else 0.0,
    )
    if calibration is not None and steps > plan.calibration_steps and timed.seconds > calibration.seconds:
        extra_steps = steps - plan.calibration_steps
        rate.step_images_per_s = extra_steps * batch / (timed.seconds - calibration.seconds)
        step_tflops = flops * rate.step_images_per_s / TFLOP
        rate.step_share_of_peak = step_tflops / peak if peak > 0 else 0.0
    return rate


def measure_compiled(
    plan: Plan, device: torch.device, out: Path, *, timeout_s: float, flops: float = 0.0, peak: float = 0.0
) -> dict[str, Any]:
    """The compiled step at ``plan.compile_batches``, in a child process killed after ``timeout_s``.

    The child imports what this process imports (its ``sys.path`` goes along as PYTHONPATH).
    """
    if not plan.compile_batches:
        return {"status": "skipped", "reason": "not in this plan"}
    result_file = out / COMPILE_FILE
    result_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.gpu_throughput", "--compiled", "--device", str(device), "--out", str(out)]
    command += ["--plan", json.dumps(asdict(plan)), "--flops", repr(flops), "--peak", repr(peak)]
    repo = Path(__file__).resolve().parent.parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    log = out / "compiled.log"
    with log.open("w") as stream:
        child = subprocess.Popen(
            command, cwd=repo, env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout_s)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # its own session: the child and its compile workers
            child.wait()
            status = f"timed out after {timeout_s:g} s"
    runs = json.loads(result_file.read_text()) if result_file.exists() else []
    tail = log.read_text(errors="replace")[-2000:] if status != "ok" else ""
    return {"status": status, "runs": runs, "log_tail": tail}


def _compiled_child(device: torch.device, out: Path, *, plan: Plan, flops: float, peak: float) -> None:
    """The child of measure_compiled: each batch size compiled afresh, results written after each."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="atelier-compiled-") as root:
        for batch in plan.compile_batches:
            torch._dynamo.reset()  # static shapes for each batch size, not a dynamic recompile
            rate = measure_batch(
                plan,
                device,
                Path(root),
                batch,
                flops=flops,
                peak=peak,
                compile_step=True,
                warmup_steps=COMPILE_WARMUP_STEPS,
                steps=plan.ratio_steps if batch == plan.ratio_batch else None,  # bs64: the ratio's own run
            )
            runs.append(asdict(rate))
            (out / COMPILE_FILE).write_text(json.dumps(runs, indent=2))


def measure_style(plan: Plan, device: torch.device, root: Path, out: Path) -> dict[str, Any]:
    """bench-style's speed-up at ``plan.style_speed_size``, then one timed gatys-preset transfer per size."""
    speed = style_bench.measure(
        plan.style_speed_size,
        device,
        repeats=plan.style_speed_repeats,
        evaluations=plan.style_evaluations,
        stricter=plan.style_stricter,
    )
    content, style = load_builtin_image(STYLE_CONTENT), load_builtin_image(STYLE_STYLE)

    def transfer(size: int, steps: int | None) -> float:
        fields: dict[str, Any] = {
            "preset": "gatys",
            "content": STYLE_CONTENT,
            "styles": [STYLE_STYLE],
            "size": size,
            "weights": "random",
        }
        params = StyleTransferParams(**(fields | ({"steps": steps} if steps is not None else {})))
        with tempfile.TemporaryDirectory(prefix="atelier-style-", dir=root) as store_root:
            hooks = StoreHooks(LocalObjectStore(Path(store_root)), f"style-{size}")
            seconds, _ = _timed(device, lambda: style_transfer(params, content, [style], hooks, device=device))
            if size == min(plan.style_sizes):
                saved = Path(store_root) / hooks.artifacts[OUTPUT_ARTIFACT]
                shutil.copyfile(saved, out / STYLE_FILE.format(size=size))
        return seconds

    if plan.warmup:
        transfer(STYLE_WARMUP_SIZE, STYLE_WARMUP_STEPS)  # untimed: cuDNN handles, kernels, lazy imports
    times = [{"size": size, "seconds": transfer(size, plan.style_steps)} for size in plan.style_sizes]
    return {
        "speed_up": {
            "size": speed.size,
            "reference_evaluations": speed.reference_evaluations,
            "speed_up": speed.speed_up,
            "stricter_speed_up": speed.stricter_speed_up,
            "atelier_steps_per_scale": speed.to_final,
            "reference_seconds": speed.reference_times,
            "atelier_seconds": speed.final_times,
        },
        "transfers": times,
        "transfer_steps": plan.style_steps or StyleTransferParams.model_fields["steps"].default,
    }


# -- The run ------------------------------------------------------------------------------------


def _rate(images_per_s: float) -> str:
    if images_per_s >= 1000:
        return f"{images_per_s / 1000:.3g}k"
    return f"{images_per_s:.3g}"


def _share(share: float) -> str:
    return f"{100 * share:.2g}%" if share < 0.1 else f"{100 * share:.0f}%"


def summary_line(result: dict[str, Any]) -> str:
    """One line: the ratio, each batch size's rate and share of peak, compiled runs, and the style figures."""
    gan = result.get("gan", {})
    parts = []
    if "ratio" in gan:
        rates = "; ".join(
            f"bs{b['batch_size']} {_rate(b['images_per_s'])} img/s, {_share(b['share_of_peak'])} of peak"
            for b in gan.get("batches", [])
        )
        parts.append(
            f"gan x{gan['ratio']['ratio']:.2f} ref ({rates})" if rates else f"gan x{gan['ratio']['ratio']:.2f} ref"
        )
    compiled = gan.get("compiled", {})
    if compiled.get("runs"):
        reference = statistics.median(gan["ratio"]["reference"]) if "ratio" in gan else None
        runs = []
        for b in compiled["runs"]:
            versus = f" x{b['images_per_s'] / reference:.2f} ref" if reference and b["batch_size"] == 64 else ""
            runs.append(f"bs{b['batch_size']} {_rate(b['images_per_s'])} img/s{versus}, {_share(b['share_of_peak'])}")
        parts.append("compiled " + "; ".join(runs))
    elif compiled.get("status") not in (None, "ok", "skipped"):
        parts.append(f"compiled {compiled['status']}")
    style = result.get("style", {})
    if "speed_up" in style:
        times = ", ".join(f"{t['size']}px {t['seconds']:.3g} s" for t in style["transfers"])
        parts.append(f"style {style['speed_up']['size']}px x{style['speed_up']['speed_up']:.2f}, {times}")
    for section in result.get("errors", {}):
        parts.append(f"{section} FAILED")
    return "; ".join(parts) if parts else "nothing measured"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


@contextlib.contextmanager
def _section(result: dict[str, Any], name: str) -> Iterator[None]:
    """Record a section's failure (type, message, last frames) in ``result["errors"]`` and go on."""
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        frames = "".join(traceback.format_exception(exc)[-6:])
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}\n{frames}"
    finally:
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 2)


def run_throughput(
    device: torch.device, *, quick: bool, out: Path, compile_timeout_s: float = COMPILE_TIMEOUT_S
) -> dict[str, Any]:
    """Measure everything the module docstring lists on ``device``; write the details under ``out``, return them.

    A failing section is recorded in ``errors`` (and named in ``summary``) and the others still run;
    ``ok`` is False then.
    """
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_for(device, quick=quick)
    result: dict[str, Any] = {
        "device": _machine(device),
        "torch": torch.__version__,
        "quick": quick,
        "plan": asdict(plan),
    }
    peak = 0.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atelier-throughput-") as tmp:
        root = Path(tmp)
        gan: dict[str, Any] = {}
        result["gan"] = gan
        with _section(result, "peak"):
            peak = matmul_tflops(device, n=plan.matmul_n, seconds=plan.matmul_seconds)
            result["peak_bf16_tflops"] = peak
            if device.type != "cuda":  # a CPU trains in fp32, and most emulate bf16 matmuls slowly
                fp32 = matmul_tflops(device, n=plan.matmul_n, seconds=plan.matmul_seconds, dtype=torch.float32)
                result["peak_fp32_tflops"] = fp32
                peak = max(peak, fp32)
            result["peak_tflops"] = peak
        with _section(result, "gan ratio"):
            ratio = measure_ratio(plan, device, root, out)
            gan["ratio"] = asdict(ratio) | {"ratio": ratio.ratio}
        with _section(result, "gan batches"):
            params = _params(Config.for_steps(1, device, nz=plan.nz, ngf=plan.ngf, ndf=plan.ndf), plan.batch_image_size)
            flops = flops_per_image(params, device)
            gan["flops_per_image"] = flops
            gan["image_size"] = plan.batch_image_size
            gan["batches"] = [asdict(b) for b in measure_batches(plan, device, root, flops=flops, peak=peak)]
        with _section(result, "style"):
            result["style"] = measure_style(plan, device, root, out)
        with _section(result, "gan compiled"):
            flops = gan.get("flops_per_image", 0.0)
            gan["compiled"] = measure_compiled(plan, device, out, timeout_s=compile_timeout_s, flops=flops, peak=peak)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["ok"] = not result.get("errors")
    result["summary"] = summary_line(result)
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """``python -m bench.gpu_throughput``: run it (or, with --compiled, measure_compiled's child) and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(".artifacts/gpu-throughput"))
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)  # measure_compiled's child ...
    parser.add_argument("--flops", type=float, default=0.0, help=argparse.SUPPRESS)  # ... given the parent's counts
    parser.add_argument("--peak", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.compiled:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in args.plan.items()}
        _compiled_child(device, args.out, plan=Plan(**fields), flops=args.flops, peak=args.peak)
        return
    print(run_throughput(device, quick=args.quick, out=args.out)["summary"])


if __name__ == "__main__":
    main()
