"""GAN quality benchmark: mode coverage on ring8 and grid25 for the lesson and stable presets, beside the papers.

Protocol (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018): after training, draw
2,500 samples; a sample is high quality within 3 standard deviations of a mode, and a mode
is captured when at least one high-quality sample is nearest to it. The figures are the
means over seeds. Runs use one torch thread each and the same steps and batch for both presets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from shared.jobs.specs import GanTrainParams
from workers.gan.data import load_points, mixture
from workers.gan.loop import HQ_METRIC, MODES_METRIC, train
from workers.hooks import InMemoryHooks

DATASETS = ("ring8", "grid25")
PRESETS = ("lesson", "stable")
DEFAULT_SEEDS = 5
# The defaults reproduce the table in docs/benchmarks.md (minutes per cell on a shared 2-core CPU).
DEFAULT_STEPS = 1500
DEFAULT_BATCH = 128
DEFAULT_WIDTH = 16  # ngf = ndf; 64 is the lesson's full dense GAN (G 256-512-1024, D 512-256)
NEVER = 10**9  # a schedule period longer than any run: no intermediate logs, grids or checkpoints
# Published ring8 figures (modes captured of 8, high-quality share), as quoted by PacGAN's Table 2.
PUBLISHED_RING8: tuple[tuple[str, float, float], ...] = (
    ("GAN (published)", 6.3, 0.982),
    ("PacGAN2 (published)", 7.9, 0.956),
    ("VEEGAN (published)", 8.0, 0.529),
)


@dataclass(frozen=True)
class Row:
    """Mean results of one preset on one dataset."""

    dataset: str
    preset: str
    modes: float
    total_modes: int
    hq_share: float
    per_seed: list[int]
    seconds: float


def run(*, dataset: str, preset: str, seed: int, steps: int, batch_size: int, width: int) -> tuple[int, float]:
    """Train one seed and return (modes captured, high-quality share) at the last step."""
    params = GanTrainParams(
        dataset=dataset,
        preset=preset,
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        ngf=width,
        ndf=width,
        log_every=NEVER,
        checkpoint_every=NEVER,
        sample_every=NEVER,
    )
    hooks = InMemoryHooks()
    train(params, load_points(dataset), hooks)
    return int(hooks.metrics[(MODES_METRIC, steps)]), hooks.metrics[(HQ_METRIC, steps)]


def measure(*, dataset: str, preset: str, seeds: int, steps: int, batch_size: int, width: int) -> Row:
    """Run every seed of one (dataset, preset) cell."""
    started = time.perf_counter()
    results = [
        run(dataset=dataset, preset=preset, seed=seed, steps=steps, batch_size=batch_size, width=width)
        for seed in range(seeds)
    ]
    return Row(
        dataset=dataset,
        preset=preset,
        modes=statistics.fmean(m for m, _ in results),
        total_modes=int(mixture(dataset).centers.shape[0]),
        hq_share=statistics.fmean(h for _, h in results),
        per_seed=[m for m, _ in results],
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table; the last line compares stable with the issue's targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help="ngf = ndf of the dense GAN")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(
        f"# {args.seeds} seeds, {args.steps} steps, batch {args.batch_size}, dense GAN width {args.width}, "
        f"1 torch thread, CPU"
    )
    print("| dataset | method | modes (mean) | high-quality samples | modes per seed | time |")
    print("|---|---|---|---|---|---|")
    rows: list[Row] = []
    for dataset in args.datasets:
        for preset in PRESETS:
            row = measure(
                dataset=dataset,
                preset=preset,
                seeds=args.seeds,
                steps=args.steps,
                batch_size=args.batch_size,
                width=args.width,
            )
            rows.append(row)
            print(
                f"| {dataset} | Atelier `{preset}` | {row.modes:.1f} / {row.total_modes} | {row.hq_share:.1%} "
                f"| {row.per_seed} | {row.seconds:.0f} s |",
                flush=True,
            )
        if dataset == "ring8":
            for name, modes, hq in PUBLISHED_RING8:
                print(f"| ring8 | {name} | {modes:.1f} / 8 | {hq:.1%} | | |")
    stable = {r.dataset: r for r in rows if r.preset == "stable"}
    verdicts = []
    if "ring8" in stable:
        r = stable["ring8"]
        verdicts.append(f"ring8 {r.modes:.1f}/8 {r.hq_share:.1%} (target >= 7.5, >= 90%)")
    if "grid25" in stable:
        r = stable["grid25"]
        verdicts.append(f"grid25 {r.modes:.1f}/25 {r.hq_share:.1%} (target >= 23, >= 85%)")
    print("stable: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
