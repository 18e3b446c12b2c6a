"""Retention (workers/retention.py) on the real Postgres and S3 server: a tenant's settings applied to its ended
jobs. A 20,000-step history is downsampled in place to at most K points per series and the metrics API answers
with the same buckets (min, max, count, mean) as before; checkpoints past their days go and the outputs stay;
jobs past theirs are deleted whole; jobs not yet due, and other tenants', are untouched; a second pass does
nothing. Given / When / Then."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db.session import transaction
from shared.storage import S3ObjectStore
from tests.conftest import Caller

pytest.importorskip("torch")

from tests.support.runs import in_process_worker, trained
from workers.retention import apply_retention
from workers.runtime import WorkerContext

pytestmark = pytest.mark.integration

STEPS = 20_000
KEPT = 1000
SERIES = ("d_loss", "g_loss", "d_real")


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield in_process_worker(settings, "retention-test")


def finished(
    client: TestClient, caller: Caller, worker: WorkerContext, sessions: sessionmaker[Session], days: int
) -> str:
    """A real tiny job, finished ``days`` ago, with a synthetic 20,000-step history in place of its own."""
    job_id = trained(client, caller, worker)
    with transaction(sessions) as session:
        session.execute(text("DELETE FROM metrics WHERE job_id = :j"), {"j": job_id})
        session.execute(
            text(
                "INSERT INTO metrics (job_id, name, step, value, attempt) "
                "SELECT :j, n.name, s, sin(s / 97.0 + n.k) + (s % 13) * 0.01 * n.k, 1 "
                "FROM generate_series(1, :steps) AS s, unnest(CAST(:names AS text[])) WITH ORDINALITY AS n(name, k)"
            ),
            {"j": job_id, "steps": STEPS, "names": list(SERIES)},
        )
        session.execute(
            text("UPDATE jobs SET finished_at = now() - make_interval(days => :d) WHERE id = :j"),
            {"d": days, "j": job_id},
        )
    return str(job_id)


def series(client: TestClient, caller: Caller, job_id: str, max_points: int) -> dict[str, list[dict[str, Any]]]:
    got = client.get(f"/v1/jobs/{job_id}/metrics", params={"max_points": max_points}, headers=caller.headers)
    assert got.status_code == 200, got.text
    return {name: got.json()["series"][name] for name in SERIES}


def rows(sessions: sessionmaker[Session], job_id: str) -> dict[str, int]:
    with transaction(sessions) as session:
        found = session.execute(
            text("SELECT name, count(*) FROM metrics WHERE job_id = :j GROUP BY name"), {"j": job_id}
        )
        return {name: int(count) for name, count in found}


def test_retention_downsamples_drops_checkpoints_and_expires_jobs_as_each_tenant_says(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], store: S3ObjectStore,
    worker: WorkerContext,
) -> None:  # fmt: skip
    # Given alice keeps checkpoints 7 days, full metrics 3 days (then 1000 points a series), jobs 30 days
    with transaction(sessions) as session:
        session.execute(
            text(
                "UPDATE tenants SET keep_checkpoints_days = 7, keep_full_metrics_days = 3, metrics_points_kept = :k, "
                "keep_jobs_days = 30 WHERE id = :t"
            ),
            {"k": KEPT, "t": alice.tenant_id},
        )
    # And her jobs ended 10 days ago (due for both), 1 day ago (due for nothing) and 40 days ago (expired),
    # and bob, who set nothing, has one that ended 100 days ago
    due, fresh, old = (finished(client, alice, worker, sessions, d) for d in (10, 1, 40))
    bobs = finished(client, bob, worker, sessions, 100)
    before = series(client, alice, due, KEPT // 2)
    fine_before = series(client, alice, due, KEPT)
    with transaction(sessions) as session:
        pointer = session.scalar(text("SELECT checkpoint_key FROM jobs WHERE id = :j"), {"j": due})
    assert store.exists(pointer)
    untouched = {j: rows(sessions, j) for j in (fresh, bobs)}
    # When retention runs
    done = apply_retention(worker)
    # Then the 10- and 40-day-old jobs lost their checkpoints and were downsampled, and the 40-day one expired
    assert done["checkpoints_dropped"] == 2 and done["jobs_downsampled"] == 2 and done["jobs_expired"] == 1
    assert done["metric_rows_removed"] == 2 * len(SERIES) * (STEPS - KEPT)
    # And the due job keeps at most 1000 rows a series, and the API answers with the same buckets as before
    assert rows(sessions, due) == dict.fromkeys(SERIES, KEPT)
    for max_points, expected in ((KEPT // 2, before), (KEPT, fine_before)):
        after = series(client, alice, due, max_points)
        for name in SERIES:
            assert len(after[name]) == len(expected[name]) == max_points
            for got, was in zip(after[name], expected[name], strict=True):
                assert (got["min"], got["max"], got["count"]) == (was["min"], was["max"], was["count"])
                assert got["value"] == pytest.approx(was["value"], rel=1e-9, abs=1e-12)
            if max_points < KEPT:  # each bucket's step too (at K itself the first bucket keeps the first step)
                assert [p["step"] for p in after[name]] == [p["step"] for p in expected[name]]
    # And its checkpoint went, its outputs stayed
    job = client.get(f"/v1/jobs/{due}", headers=alice.headers).json()
    assert job["checkpoint"] is None and not store.exists(pointer)
    assert client.get(f"/v1/jobs/{due}/artifacts/generator.pt", headers=alice.headers).status_code == 200
    assert client.get("/v1/usage", headers=alice.headers).json()["stored"]["checkpoints"] > 0  # the fresh job's
    # And the expired job is gone whole, objects included
    assert client.get(f"/v1/jobs/{old}", headers=alice.headers).status_code == 404
    assert list(store.listing(f"jobs/{old}/")) == [] and rows(sessions, old) == {}
    # And the job not yet due, and bob's, are as they were
    assert {j: rows(sessions, j) for j in (fresh, bobs)} == untouched
    assert client.get(f"/v1/jobs/{bobs}", headers=bob.headers).json()["checkpoint"] is not None
    # When it runs again, Then there is nothing left to do
    assert apply_retention(worker) == dict.fromkeys(done, 0)
