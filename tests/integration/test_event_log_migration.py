"""Migration 0004 gives jobs that existed before the event log a state event (and done, if they
ended), so that their streams replay where they stand and finished ones end; it also downgrades."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from shared.config import Settings
from shared.db.migrate import alembic_config
from tests.support import services

pytestmark = pytest.mark.integration


@pytest.fixture
def at_0003(settings: Settings) -> Iterator[Settings]:
    """A fresh database migrated to 0003 only."""
    name, _url = services.create_database()
    fresh = settings.model_copy(update={"database_url": settings.database_url.rsplit("/", 1)[0] + f"/{name}"})
    command.upgrade(alembic_config(fresh), "0003")
    yield fresh
    services.drop_database(name)


def test_old_jobs_get_a_state_event_and_finished_ones_done(at_0003: Settings) -> None:
    engine = create_engine(at_0003.database_url)
    tenant, running, failed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name) VALUES (:id, 'old')"), {"id": tenant})
        for job_id, state, code in ((running, "running", None), (failed, "failed", "diverged")):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, type, params, queue, state, attempt, error_code, error_message) "
                    "VALUES (:id, :t, 'gan.train', '{}', 'gpu', :state, 2, :code, :msg)"
                ),
                {"id": job_id, "t": tenant, "state": state, "code": code, "msg": "NaN at step 3" if code else None},
            )
    command.upgrade(alembic_config(at_0003), "0004")
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT job_id, seq, type, data FROM job_events ORDER BY job_id, seq")).all()
        seqs = dict(conn.execute(text("SELECT id, event_seq FROM jobs")).all())
    events = {(r.job_id, r.seq): (r.type, r.data) for r in rows}
    assert events[(running, 1)][0] == "state" and events[(running, 1)][1]["state"] == "running"
    assert events[(running, 1)][1]["error"] is None and (running, 2) not in events
    assert events[(failed, 1)][1] | {"ts": 0} == {
        "state": "failed", "attempt": 2, "error": {"code": "diverged", "message": "NaN at step 3"}, "ts": 0,
    }  # fmt: skip
    assert events[(failed, 2)][0] == "done" and events[(failed, 2)][1]["state"] == "failed"
    assert seqs == {running: 1, failed: 2}
    command.downgrade(alembic_config(at_0003), "0003")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT to_regclass('job_events')")).scalar() is None
    engine.dispose()
