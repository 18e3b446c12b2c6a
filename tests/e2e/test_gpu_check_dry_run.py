"""The GPU check's CPU dry run, as CI runs it: `make gpu-check ARGS="--device cpu --quick"`.

It fails when a smoke case fails, so the one prepared command cannot rot between the rare runs on a
GPU machine. ``--stock-only`` adds what the GPU machine enforces by itself: nothing outside its
stock Python and bench/gpu-wheels.txt may be imported. No Postgres, Redis or network is used.
Each test reads Given / When / Then."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_check
from bench.gpu_check import FAILED, OK, Case, Context
from shared.storage import LocalObjectStore

REPO = Path(__file__).resolve().parents[2]
DRY_RUN_TIMEOUT_S = 420  # the dry run takes about a minute on CI's 2 cores; fail rather than stall
DEADLINE_S = 360  # the check's own deadline: generous here, so a loaded CI machine does not cut cases
ISOLATED_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `make gpu-check` CPU dry run: its exit status, output lines and results.json."""
    out = tmp_path_factory.mktemp("gpu-check")
    args = f"--device cpu --quick --stock-only --deadline-s {DEADLINE_S} --out {out}"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    started = time.monotonic()
    done = subprocess.run(
        ["make", "-s", "gpu-check", f"GPU_PYTHON={sys.executable}", f"ARGS={args}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_TIMEOUT_S,
        check=False,
    )
    return {
        "returncode": done.returncode,
        "stdout": done.stdout.strip().splitlines(),
        "stderr": done.stderr,
        "seconds": time.monotonic() - started,
        "results": json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None,
        "out": out,
    }


def test_every_smoke_case_passes_on_cpu(dry_run: dict[str, Any]) -> None:
    # Given the dry run's results, Then every expected case ran and passed, and the exit status says so
    results = dry_run["results"]
    assert results is not None, dry_run["stderr"][-3000:]
    failed = {c["name"]: c["error"] for c in results["cases"] if c["status"] != OK}
    assert failed == {}, json.dumps(failed, indent=1)[-6000:]
    assert [c["name"] for c in results["cases"]] == [c.name for c in gpu_check.cases(quick=True, cuda=False)]
    assert dry_run["returncode"] == 0, dry_run["stderr"][-3000:]


def test_the_summary_line_is_printed_last(dry_run: dict[str, Any]) -> None:
    results = dry_run["results"]
    assert results is not None
    total = len(results["cases"])
    last = dry_run["stdout"][-1]
    assert last == results["summary"]
    assert last.startswith(f"gpu-check: smoke {total}/{total} ok; ")
    assert last.endswith("; card cpu (dry run)")


def test_the_results_describe_the_machine_and_the_store_holds_the_pictures(dry_run: dict[str, Any]) -> None:
    results = dry_run["results"]
    assert results is not None
    machine = results["machine"]
    assert machine["device"] == "cpu" and machine["torch_at_least_2_11"] is True
    assert (dry_run["out"] / "report.md").read_text().startswith("# GPU check")
    pictures = list((dry_run["out"] / "store" / "jobs").rglob("*.png"))
    assert len(pictures) >= len(results["cases"]) - 2  # the two OOM cases stop before any picture
    assert not list((dry_run["out"] / "store" / "jobs").rglob("*.pt"))  # checkpoints and weights pruned


@pytest.mark.skipif(not (REPO / "bench" / "gpu_throughput.py").exists(), reason="no throughput module yet")
def test_the_throughput_part_ran(dry_run: dict[str, Any]) -> None:
    results = dry_run["results"]
    assert results is not None
    throughput = results["throughput"]
    assert throughput["status"] == OK, json.dumps(throughput.get("error"), indent=1)
    assert throughput["summary"] in results["summary"]


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(
        device=torch.device("cpu"),
        store=LocalObjectStore(tmp_path / "store"),
        deadline=time.monotonic() + ISOLATED_TIMEOUT_S,
        child_args=["--device", "cpu", "--threads", "1", "--quick"],
        out=tmp_path,
    )


def _cheap_case() -> Case:
    (case,) = gpu_check.select_cases(gpu_check.cases(quick=True, cuda=False), ["gan/preset/stable-ring8"])
    return replace(case, isolated=True)


def test_an_isolated_case_runs_in_a_child_process(ctx: Context) -> None:
    # Given a cheap case marked isolated (as torch.compile's case is on a GPU)
    # When it runs
    result = gpu_check.run_case(_cheap_case(), ctx)
    # Then a child process ran it and its result came back
    assert result.status == OK, result.error
    assert Path(result.details["child"]).joinpath("results.json").exists()


def test_an_isolated_case_that_outlives_its_time_is_killed_and_recorded(ctx: Context) -> None:
    # Given one second left before the deadline
    ctx.deadline = time.monotonic() + 1.0
    # When an isolated case starts
    result = gpu_check.run_case(_cheap_case(), ctx)
    # Then its child is killed and the case fails with a timeout, not a hang
    assert result.status == FAILED
    assert result.error is not None and result.error["type"] == "TimeoutError"
    assert result.seconds < ISOLATED_TIMEOUT_S
