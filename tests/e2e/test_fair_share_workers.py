"""Fair share on real workers: the API, Postgres, Redis and a prefork Celery worker with two children.
A tenant's backlog does not hold back a tenant that submits after it. Each test reads Given / When / Then."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from tests.conftest import Caller
from tests.support import services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# About a second of work a job on this machine: as short as a gan.train gets.
QUICK = {"dataset": "ring8", "steps": 5, "batch_size": 16, "sample_every": 5, "checkpoint_every": 5}
A_JOBS, B_JOBS = 30, 5
MAX_A_STARTS_BETWEEN = 4  # A's jobs that may start between B's submission and B's last start
DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def pair(settings: Settings, log_dir: Path) -> Iterator[services.Proc]:
    """Two workers: one Celery worker on the gpu queue with two pool children."""
    proc = services.celery_worker(settings, log_dir, "fair", queues="gpu", concurrency=2).start()
    proc.wait_for_log("ready.")
    yield proc
    proc.stop()


def _submit(client: TestClient, caller: Caller, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post("/v1/jobs", json={"type": "gan.train", "params": QUICK}, headers=caller.headers)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def _starts(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, datetime | None]:
    with sessions() as session:
        rows = session.execute(
            text("SELECT id::text, started_at FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}
        ).all()
    return {r[0]: r[1] for r in rows}


def test_a_tenant_that_submits_after_a_backlog_starts_within_a_few_of_its_jobs(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], pair: services.Proc
) -> None:
    # Given alice's 30 queued jobs, and two workers busy with them
    a_jobs = _submit(client, alice, A_JOBS)
    deadline = time.monotonic() + DEADLINE_S
    while sum(s is not None for s in _starts(sessions, a_jobs).values()) < 2:
        assert time.monotonic() < deadline, "alice's jobs never started"
        time.sleep(0.2)
    # When bob submits 5 jobs
    with sessions() as session:
        submitted = session.scalar(text("SELECT now()"))
    b_jobs = _submit(client, bob, B_JOBS)
    while not all(_starts(sessions, b_jobs).values()):
        assert time.monotonic() < deadline, f"bob's jobs did not all start: {_starts(sessions, b_jobs)}"
        time.sleep(0.2)
    # Then all of bob's started while at most a few more of alice's did, not after her backlog
    b_last = max(s for s in _starts(sessions, b_jobs).values() if s is not None)
    a_starts = _starts(sessions, a_jobs)
    between = [j for j, s in a_starts.items() if s is not None and submitted < s < b_last]
    left = [j for j, s in a_starts.items() if s is None]
    assert len(between) <= MAX_A_STARTS_BETWEEN, f"{len(between)} of alice's jobs started in between"
    assert len(left) >= A_JOBS // 2, "alice's backlog was nearly done first: the test would prove nothing"
    # And every job of both ends, each run exactly once
    while True:
        with sessions() as session:
            rows = session.execute(
                text("SELECT state, attempt FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": a_jobs + b_jobs},
            ).all()
        if all(r.state == "succeeded" for r in rows):
            break
        assert not any(r.state in ("failed", "cancelled") for r in rows), rows
        assert time.monotonic() < deadline, "the jobs did not all finish"
        time.sleep(0.5)
    assert len(rows) == A_JOBS + B_JOBS and {r.attempt for r in rows} == {1}


def test_each_pool_process_advertises_its_device_and_queues(
    settings: Settings, sessions: sessionmaker[Session], pair: services.Proc
) -> None:
    # Given the worker with two pool children, When its presence rows are read
    deadline = time.monotonic() + 60
    while True:
        with sessions() as session:
            rows = session.execute(
                text(
                    "SELECT owner, queues, device, memory_total_bytes, memory_free_bytes, seen_at > now() - "
                    "make_interval(secs => :fresh) AS fresh FROM worker_presence ORDER BY owner"
                ),
                {"fresh": settings.heartbeat_s * 3},
            ).all()
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # Then each child has its own row: the gpu queue, the CPU, and the configured budget free, seen lately
    assert len(rows) == 2, rows
    assert len({r.owner for r in rows}) == 2
    for row in rows:
        assert (row.queues, row.device) == (["gpu"], "cpu")
        assert row.memory_total_bytes == row.memory_free_bytes == settings.worker_device_memory_bytes
        assert row.fresh


SWEEP = {
    "type": "gan.train",
    "base_params": {"dataset": "ring8", "steps": 30, "batch_size": 32, "sample_every": 30, "checkpoint_every": 30},
    "grid": {"lr_g": [0.0002, 0.002], "preset": ["lesson", "stable"]},
    "seeds": [1, 2, 3],
    "objective": {"metric": "hq_share"},
    "max_parallel": 2,
}


def test_a_twelve_trial_grid_sweep_runs_two_at_a_time_to_a_complete_table(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], pair: services.Proc
) -> None:
    # Given a 12-trial ring8 sweep (lr_g x preset x 3 seeds) with max_parallel 2, on two workers
    created = client.post("/v1/sweeps", json=SWEEP, headers=alice.headers)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    # When the workers run it to the end
    deadline = time.monotonic() + DEADLINE_S
    most_running = 0
    while True:
        sweep = client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json()
        most_running = max(most_running, sweep["counts"].get("running", 0))
        if sweep["state"] == "done":
            break
        assert time.monotonic() < deadline, f"the sweep did not end: {sweep['counts']}"
        time.sleep(0.3)
    # Then every trial succeeded with an objective, never more than 2 ran at once (by the poll and the rows)
    assert sweep["counts"] == {"succeeded": 12}
    assert all(isinstance(t["objective"], float) for t in sweep["trials"]), sweep["trials"]
    assert most_running <= 2
    with sessions() as session:
        spans = session.execute(
            text("SELECT claimed_at, finished_at FROM jobs WHERE sweep_id = :s"), {"s": sweep_id}
        ).all()
    for claimed, _finished in spans:
        overlapping = sum(1 for a, b in spans if a <= claimed < b)
        assert overlapping <= 2, "more than max_parallel trials ran at once"
    # And the best trial is the one with the highest hq_share, with its params
    best = max(sweep["trials"], key=lambda t: t["objective"])
    assert sweep["best"]["job_id"] == best["job_id"]
    assert sweep["best"]["objective"] == best["objective"]
    assert set(sweep["best"]["params"]) == {"lr_g", "preset", "seed"}


GOOD_RATES, HOPELESS_RATES = (1e-3, 5e-3), (1e-6, 1e-7)
EARLY_SWEEP = {
    "type": "gan.train",
    "base_params": {
        "dataset": "ring8",
        "preset": "stable",
        "steps": 1000,
        "batch_size": 64,
        "lr_d": 1e-3,
        "eval_every": 100,
        "sample_every": 500,
        "checkpoint_every": 500,
    },
    # Combination-major: three good trials run first, then hopeless, good, hopeless
    "grid": {"lr_g": [GOOD_RATES[0], HOPELESS_RATES[0], GOOD_RATES[1], HOPELESS_RATES[1]]},
    "seeds": [1, 2, 3],
    "objective": {"metric": "modes"},
    "max_parallel": 2,
    # By step 400 a good rate covers 7 or 8 of ring8's modes and a hopeless one none (measured: the trials'
    # running means there are 4.5-5, so the median the rule uses is far from both)
    "early_stopping": {"rule": "median", "min_steps": 400, "interval": 100, "min_trials": 2},
}


def test_early_stopping_stops_the_hopeless_rates_of_a_real_sweep_and_never_the_best(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], pair: services.Proc
) -> None:
    # Given a 12-trial ring8 sweep, half of it with generator rates too small to learn anything, and the
    # median rule from step 400
    created = client.post("/v1/sweeps", json=EARLY_SWEEP, headers=alice.headers)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    # When two real workers run it to the end
    deadline = time.monotonic() + DEADLINE_S
    while (sweep := client.get(f"/v1/sweeps/{sweep_id}", headers=alice.headers).json())["state"] != "done":
        assert time.monotonic() < deadline, f"the sweep did not end: {sweep['counts']}"
        time.sleep(0.3)
    # Then at least a third of the trials were stopped early, every one of them a hopeless rate
    trials = sweep["trials"]
    stopped = [t for t in trials if t["state"] == "stopped_early"]
    assert len(stopped) >= len(trials) / 3, sweep["counts"]
    assert {t["params"]["lr_g"] for t in stopped} <= set(HOPELESS_RATES), stopped
    # And every good trial ran to the end, so the eventual best (a good rate) was never stopped
    good = [t for t in trials if t["params"]["lr_g"] in GOOD_RATES]
    assert {t["state"] for t in good} == {"succeeded"}, good
    assert sweep["best"]["params"]["lr_g"] in GOOD_RATES
    assert sweep["best"]["objective"] == max(t["objective"] for t in good) >= 7.0
    # And each stopped trial stopped at a tick from 400 on, behind the median, with its checkpoint kept there
    for trial in stopped:
        verdict = trial["early_stop"]
        assert verdict["rule"] == "median" and verdict["step"] >= 400 and verdict["compared"] >= 2
        assert verdict["value"] < verdict["threshold"] < sweep["best"]["objective"]
        assert verdict["step"] <= trial["step"] < EARLY_SWEEP["base_params"]["steps"]  # type: ignore[index]
    with sessions() as session:
        kept = session.execute(
            text(
                "SELECT count(*) FROM jobs WHERE sweep_id = :s AND state = 'stopped_early' AND checkpoint_key IS NOT NULL"
            ),
            {"s": sweep_id},
        ).scalar_one()
    assert kept == len(stopped)
