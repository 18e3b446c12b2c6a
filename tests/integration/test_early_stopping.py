"""Early stopping through the real worker runtime, Postgres and the S3 server: a sweep submitted over the API,
its trials run in this process by ``run_job`` with a scripted executor (known objective curves, so which
trial should stop is known), the heartbeat's flush and judgement exactly as in production. Stopped trials end
``stopped_early`` with their checkpoint kept and the verdict on the job; the best trial is never stopped.
Real GAN training under the same rule, on real workers, is tests/e2e/test_fair_share_workers.py.
Given / When / Then."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from workers.hooks import StopRequested
from workers.runtime import JobRunner, WorkerContext, run_job

pytestmark = pytest.mark.integration

STEPS = 600
EVERY = 50  # the scripted loop reports the objective (and syncs) every 50 steps
GOOD, GOOD2, HOPELESS, HOPELESS2 = 1e-3, 2e-3, 1e-6, 1e-7


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "early-stop-test"}))


def modes_curve(lr: float, step: int) -> float:
    """Good rates find a mode every 50 steps up to all 8; hopeless ones find none."""
    return 0.0 if lr < 1e-5 else float(min(8, step // EVERY))


def scripted(curve: Callable[[float, int], float]) -> Callable[[WorkerContext, queries.Claim, JobRunner], None]:
    """A training loop that reports ``curve(lr_g, step)`` as ``modes`` and stops like the real loops do."""

    def execute(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
        lr, total = float(claim.params["lr_g"]), int(claim.params["steps"])
        for step in range((claim.checkpoint_step or 0) + 1, total + 1):
            runner.report_progress(step, total)
            if step % EVERY == 0:
                runner.report_metrics(step, {"modes": curve(lr, step)})
                assert runner.sync()  # the flush and the judgement, as the heartbeat thread does them
            reason = runner.should_stop()
            if reason is not None:
                runner.save_checkpoint(step, f"checkpoint at {step}".encode())
                raise StopRequested(reason, step)

    return execute


def make_sweep(client: TestClient, caller: Caller, grid: list[float], seeds: list[int], rule: dict[str, Any]) -> Any:
    body = {
        "type": "gan.train",
        "base_params": {"dataset": "ring8", "steps": STEPS, "batch_size": 16},
        "grid": {"lr_g": grid},
        "seeds": seeds,
        "objective": {"metric": "modes"},
        "max_parallel": 1,
        "early_stopping": rule,
    }
    created = client.post("/v1/sweeps", json=body, headers=caller.headers)
    assert created.status_code == 201, created.text
    return created.json()


def run_trials(worker: WorkerContext, sweep: Any, execute: Any) -> list[str]:
    """Run every trial in the order the sweep made them; what each run returned."""
    return [run_job(worker, uuid.UUID(t["job_id"]), execute, exact=True) for t in sweep["trials"]]


def test_the_median_rule_stops_the_hopeless_rates_at_the_first_tick_and_keeps_their_checkpoints(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore, worker: WorkerContext
) -> None:
    # Given an 8-trial sweep, two good and two hopeless rates x 2 seeds, with the median rule from step 200
    rule = {"rule": "median", "min_steps": 200, "interval": 100, "min_trials": 2}
    sweep = make_sweep(client, alice, [GOOD, HOPELESS, GOOD2, HOPELESS2], [1, 2], rule)
    # When its trials run one after another (good, good, hopeless, hopeless, good, good, hopeless, hopeless)
    outcomes = run_trials(worker, sweep, scripted(modes_curve))
    # Then every hopeless trial was stopped at step 200, once two others had reached it, and no good one was
    got = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
    by_rate = [(t["params"]["lr_g"], t["state"]) for t in got["trials"]]
    assert outcomes == ["succeeded", "succeeded", "stopped_early", "stopped_early"] * 2
    assert by_rate == [
        (rate, "succeeded" if rate in (GOOD, GOOD2) else "stopped_early")
        for rate in (GOOD, GOOD, HOPELESS, HOPELESS, GOOD2, GOOD2, HOPELESS2, HOPELESS2)
    ]
    assert got["counts"] == {"succeeded": 4, "stopped_early": 4}
    assert got["state"] == "done"
    assert got["early_stopping"] == {**rule, "reduction_factor": 3}
    # And the best is a good trial; each stopped one says why, with the numbers
    assert got["best"]["params"]["lr_g"] in (GOOD, GOOD2) and got["best"]["objective"] == 8.0
    stopped = [t for t in got["trials"] if t["state"] == "stopped_early"]
    first = stopped[0]["early_stop"]
    assert (first["rule"], first["step"], first["metric"], first["value"]) == ("median", 200, "modes", 0.0)
    assert first["compared"] == 2 and first["threshold"] == pytest.approx(2.5)  # the mean of 1, 2, 3, 4
    assert "below the median 2.5 of 2 other trials' running means at that step" in first["message"]
    assert stopped[-1]["early_stop"]["compared"] == 7  # four good and the three hopeless stopped at 200 before it
    # And each stopped trial kept the checkpoint of the step it stopped at, in the store
    with transaction(sessions) as session:
        rows = session.execute(
            text("SELECT id, checkpoint_step, checkpoint_key, progress_step FROM jobs WHERE state = 'stopped_early'")
        ).all()
    assert len(rows) == 4
    for row in rows:
        assert row.checkpoint_step == row.progress_step == 200
        assert store.get(row.checkpoint_key) == b"checkpoint at 200"
    # And the job reads and its last events (the stream's and the webhooks') say stopped_early, with the reason and the sweep
    job = client.get(f"/v1/jobs/{stopped[0]['job_id']}", headers=alice.headers).json()
    assert job["state"] == "stopped_early" and job["sweep_id"] == sweep["id"]
    assert job["early_stop"] == first and job["error"] is None and job["finished_at"] is not None
    with transaction(sessions) as session:
        events = session.execute(
            text("SELECT type, data->>'state' AS state FROM job_events WHERE job_id = :j ORDER BY seq DESC LIMIT 2"),
            {"j": stopped[0]["job_id"]},
        ).all()
    assert [tuple(e) for e in events] == [("done", "stopped_early"), ("state", "stopped_early")]
    # And it has ended: a cancel is refused like a succeeded job's
    refused = client.post(f"/v1/jobs/{stopped[0]['job_id']}/cancel", headers=alice.headers)
    assert refused.status_code == 409, refused.text
    assert "already stopped_early; nothing to cancel" in refused.json()["error"]["message"]


def test_asha_stops_a_trial_outside_the_best_half_of_its_rung_and_lets_a_better_one_climb(
    client: TestClient, alice: Caller, worker: WorkerContext
) -> None:
    # Given rates whose objective grows as 4x, 3x and 5x the step/100 (rates stand in for quality),
    # and ASHA rungs at 100, 200, 400 keeping the best half, judging from the first other trial
    quality = {1e-3: 4.0, 2e-3: 3.0, 3e-3: 5.0}

    def curve(lr: float, step: int) -> float:
        return quality[lr] * step / 100

    rule = {"rule": "asha", "min_steps": 100, "reduction_factor": 2, "min_trials": 1}
    sweep = make_sweep(client, alice, list(quality), [7], rule)
    # When they run in that order
    outcomes = run_trials(worker, sweep, scripted(curve))
    # Then the first runs (nothing to compare), the second is not in the best half of rung 100 and stops
    # there, and the third is in the best half of every rung it reaches and finishes
    assert outcomes == ["succeeded", "stopped_early", "succeeded"]
    got = client.get(f"/v1/sweeps/{sweep['id']}", headers=alice.headers).json()
    verdict = got["trials"][1]["early_stop"]
    assert (verdict["rule"], verdict["step"], verdict["value"], verdict["threshold"]) == ("asha", 100, 3.0, 4.0)
    assert got["best"]["params"]["lr_g"] == 3e-3 and got["best"]["objective"] == pytest.approx(30.0)


def test_a_sweep_without_a_rule_never_stops_a_trial(client: TestClient, alice: Caller, worker: WorkerContext) -> None:
    # Given the same hopeless and good rates but no early_stopping
    body = {
        "type": "gan.train",
        "base_params": {"dataset": "ring8", "steps": 300, "batch_size": 16},
        "grid": {"lr_g": [GOOD, GOOD2, HOPELESS, HOPELESS2]},
        "objective": {"metric": "modes"},
    }
    sweep = client.post("/v1/sweeps", json=body, headers=alice.headers).json()
    # When they run, then all four run to the end
    assert run_trials(worker, sweep, scripted(modes_curve)) == ["succeeded"] * 4
