"""The job-polling read path (services/api/reads.py) on the real Postgres: pooled connections
that the database dropped (a restart, a failover, an idle timeout) cost the client nothing.
Each test reads Given / When / Then."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from services.api.app import create_app
from shared.config import Settings
from tests.conftest import Caller
from tests.support.services import pg_admin_url

pytestmark = pytest.mark.integration

ROUNDS = 30  # the close-versus-next-query race showed about once in 3 CI runs with one round


def terminate_connections(database: str) -> int:
    """Close every server connection to ``database`` from the server side, as a restart does."""
    with psycopg.connect(pg_admin_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


def test_a_poll_after_the_database_dropped_every_connection_still_answers(settings: Settings, alice: Caller) -> None:
    # Given an API (no read cache) whose polling pool holds open connections
    uncached = settings.model_copy(update={"job_read_cache_s": 0.0})
    with TestClient(create_app(uncached)) as app:
        job_id = app.post("/v1/jobs", json={"type": "gan.train", "params": {"steps": 5}}, headers=alice.headers).json()[
            "id"
        ]
        assert app.get(f"/v1/jobs/{job_id}", headers=alice.headers).status_code == 200
        # When the database drops every connection to it, again and again: the poll right
        # after may find the socket closed, or the server's FATAL message read but the close
        # not yet seen (asyncpg then refuses the query with an InternalClientError)
        for round_ in range(ROUNDS):
            assert terminate_connections(make_url(settings.database_url).database or "") >= 1
            # Then the next poll still answers 200 with the job, not a 503 or a 500
            again = app.get(f"/v1/jobs/{job_id}", headers=alice.headers)
            assert again.status_code == 200, (round_, again.text)
            assert again.json()["id"] == job_id
