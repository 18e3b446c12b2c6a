"""Torch threads benchmark: two worker processes training at once on this host, against one alone.

Each side runs in fresh processes that train the same small job: the 2-D ring8 mixture GAN through
the pure loop (``workers.gan.loop.train``, as bench/gan_quality.py trains it), for the same window of
wall-clock time. Two settings are compared:

- **new default**: no ``ATELIER_TORCH_THREADS``; the child takes its threads from
  ``workers.threads.apply_worker_threads``, the function a worker calls when its pool child starts
  and at every job start, with the environment the worker entry point adds (``OMP_WAIT_POLICY``).
  Worker A registers and trains alone; then worker B starts (registers), and both start a job, so A
  is rebalanced at its next job as a real worker would be.
- **old default**: every process at torch's default thread count (one per core), OpenMP's default
  (spinning) wait policy.

The figure is the aggregate steps/s of the two against the steps/s of one alone, per setting; the
last line is the new default's ratio (target >= 0.9; exit 1 under it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from workers.threads import host_cores, openmp_defaults

ROOT = Path(__file__).resolve().parents[1]
DATASET = "ring8"
PRESET = "stable"
SEED = 0
DEFAULT_WINDOW_S = 12.0
DEFAULT_ROUNDS = 2
WARMUP_STEPS = 100
START_MARGIN_S = 0.5  # between sending "run" and the window's start, so both children start together
CHILD_TIMEOUT_S = 180.0  # importing torch on a loaded host, or one window
TARGET_RATIO = 0.9
AUTO, OLD = "auto", "old"
MODES = {AUTO: "new default", OLD: "old default"}
STRIPPED_ENV = ("ATELIER_TORCH_THREADS", "OMP_", "MKL_", "GOMP_", "KMP_")
LOG_TAIL_CHARS = 2000


# --- the child: one worker process --------------------------------------------------------


def child(*, mode: str, registry: Path, batch_size: int) -> int:
    """Serve ``init`` / ``run START END`` / ``quit`` on stdin, one JSON line per answer on stdout."""
    import torch

    from bench.gan_quality import _quiet
    from shared.config import Settings
    from workers.gan.data import load_points
    from workers.gan.loop import train
    from workers.hooks import STOP_SHUTDOWN, InMemoryHooks, StopRequested
    from workers.threads import apply_worker_threads

    settings = Settings(torch_threads=None, device="cpu", worker_registry_dir=registry)
    data = load_points(DATASET)

    @dataclass
    class WindowHooks(InMemoryHooks):
        """Stops the loop at ``end`` (time.time()) and counts the steps finished before it."""

        end: float = 0.0
        done: int = 0

        def should_stop(self) -> str | None:
            """STOP_SHUTDOWN once the window is over."""
            if time.time() >= self.end:
                return STOP_SHUTDOWN
            self.done += 1
            return None

    def threads() -> int:
        # The new default: what a worker's pool child does at start and at each job start.
        return apply_worker_threads(settings) if mode == AUTO else torch.get_num_threads()

    def answer(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    answer(loaded=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "init":
            chosen = threads()
            train(
                _quiet(dataset=DATASET, preset=PRESET, seed=SEED, steps=WARMUP_STEPS, batch_size=batch_size),
                data,
                InMemoryHooks(),
            )
            answer(threads=chosen)
        elif command == "run":
            start, end = (float(value) for value in rest)
            chosen = threads()
            hooks = WindowHooks(end=end)
            time.sleep(max(0.0, start - time.time()))
            params = _quiet(dataset=DATASET, preset=PRESET, seed=SEED, steps=10**6, batch_size=batch_size)
            with contextlib.suppress(StopRequested):
                train(params, data, hooks)
            answer(steps=hooks.done, threads=chosen, interop=torch.get_num_interop_threads())
        elif command == "quit":
            return 0
    return 0


# --- the parent ------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A child failed or did not answer; the message carries its log."""


@dataclass
class Child:
    """One worker process of the bench, driven over its stdin and stdout."""

    name: str
    process: subprocess.Popen[str]
    log_path: Path
    log: IO[str]

    def ask(self, command: str) -> dict[str, Any]:
        """Send one command and wait for its JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def answer(self) -> dict[str, Any]:
        """The next JSON line the child prints."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], CHILD_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.log.flush()
            tail = self.log_path.read_text()[-LOG_TAIL_CHARS:]
            raise BenchError(f"worker {self.name} did not answer (exit {self.process.poll()}):\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        """Ask it to quit; kill it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def child_env(mode: str) -> dict[str, str]:
    """The environment a worker would have: nothing set by hand, plus the entry point's defaults (new)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(STRIPPED_ENV)}
    if mode == AUTO:
        env.update(openmp_defaults(env))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def spawn(name: str, *, mode: str, registry: Path, batch_size: int, logs: Path) -> Child:
    """Start one child process (it imports torch and the loop, then says it is loaded)."""
    log_path = logs / f"{mode}-{name}.log"
    log = log_path.open("w")
    argv = [sys.executable, "-m", "bench.threads", "--child", mode, "--registry", str(registry)]
    process = subprocess.Popen(
        [*argv, "--batch-size", str(batch_size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=child_env(mode),
        cwd=ROOT,
    )
    return Child(name=name, process=process, log_path=log_path, log=log)


def run_window(children: list[Child], window_s: float) -> list[dict[str, Any]]:
    """Have every child train over the same window; their answers."""
    start = time.time() + START_MARGIN_S
    for one in children:
        assert one.process.stdin is not None
        one.process.stdin.write(f"run {start} {start + window_s}\n")
        one.process.stdin.flush()
    return [one.answer() for one in children]


@dataclass
class Tally:
    """Steps/s of one setting, summed over the rounds."""

    alone: float = 0.0
    two: float = 0.0
    threads: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Aggregate steps/s of two against one alone."""
        return self.two / self.alone if self.alone > 0 else 0.0


def measure(mode: str, *, window_s: float, batch_size: int, logs: Path, tally: Tally) -> str:
    """One round of one setting: A alone, then B starts and both train; a line for the report."""
    with tempfile.TemporaryDirectory(prefix="atelier-bench-registry-") as registry:
        workers = [
            spawn(name, mode=mode, registry=Path(registry), batch_size=batch_size, logs=logs) for name in ("a", "b")
        ]
        try:
            for one in workers:
                one.answer()  # loaded
            workers[0].ask("init")
            (alone,) = run_window(workers[:1], window_s)
            workers[1].ask("init")  # the second worker starts
            both = run_window(workers, window_s)
        finally:
            for one in workers:
                one.stop()
    alone_rate = alone["steps"] / window_s
    rates = [answer["steps"] / window_s for answer in both]
    tally.alone += alone_rate
    tally.two += sum(rates)
    threads = f"{alone['threads']} alone, {' + '.join(str(a['threads']) for a in both)} together"
    tally.threads.append(threads)
    return (
        f"{MODES[mode]}: alone {alone_rate:.1f} steps/s; two {' + '.join(f'{r:.1f}' for r in rates)} = "
        f"{sum(rates):.1f} steps/s; ratio {sum(rates) / alone_rate if alone_rate else 0.0:.2f} "
        f"(threads {threads}, inter-op {alone['interop']})"
    )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    """Print each round and the ratios; the last line is the new default's (exit 1 under the target)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, help="seconds each side trains")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--registry", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(mode=args.child, registry=args.registry, batch_size=args.batch_size)

    affinity = len(os.sched_getaffinity(0))
    print(f"# {DATASET}, preset {PRESET}, batch {args.batch_size}; {args.rounds} rounds of {args.window:g} s per side")
    print(f"# cores usable: {host_cores()} (affinity {affinity}); load average at start {_load()}", flush=True)
    tallies = {mode: Tally() for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="atelier-bench-threads-") as logs:
        for round_no in range(1, args.rounds + 1):
            for mode in MODES:
                line = measure(
                    mode, window_s=args.window, batch_size=args.batch_size, logs=Path(logs), tally=tallies[mode]
                )
                print(f"round {round_no}, {line}", flush=True)
    new, old = tallies[AUTO], tallies[OLD]
    rounds = args.rounds
    print(f"# load average at end {_load()}")
    print(
        f"old default (torch's threads in every process, spinning OpenMP): two {old.two / rounds:.1f} steps/s "
        f"vs alone {old.alone / rounds:.1f}, ratio {old.ratio:.2f}"
    )
    print(
        f"new default, two together against the old default alone: {new.two / rounds:.1f} vs "
        f"{old.alone / rounds:.1f} steps/s = {new.two / old.alone if old.alone else 0.0:.2f}"
    )
    print(
        f"ratio two workers / one alone, aggregate steps/s (new default) = {new.ratio:.2f} "
        f"(two {new.two / rounds:.1f} vs alone {new.alone / rounds:.1f} steps/s; target >= {TARGET_RATIO})"
    )
    return 0 if new.ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
