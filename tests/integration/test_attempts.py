"""How attempts are counted, on the real Postgres: a worker that dies (its lease expires)
uses up an attempt; a worker that hands the job back on shutdown (SIGTERM from a deploy or a
scale-down) does not, yet its attempt is still fenced out. Each test reads Given / When / Then."""

from __future__ import annotations

import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.session import transaction
from shared.jobs.states import JobState
from tests.conftest import Caller

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 2
SHORT_LEASE_S = 0.05


def new_job(sessions: sessionmaker[Session], caller: Caller) -> uuid.UUID:
    with transaction(sessions) as session:
        job, _ = queries.create_job(
            session, tenant_id=caller.tenant_id, job_type="gan.train", params={"dataset": "digits", "steps": 5},
            queue="gpu", total=5, max_attempts=MAX_ATTEMPTS, idempotency_key=None,
        )  # fmt: skip
        return job.id


def claim(sessions: sessionmaker[Session], job_id: uuid.UUID, lease_s: float = 30.0) -> queries.Claim | None:
    with transaction(sessions) as session:
        return queries.claim_job(session, job_id=job_id, owner="test-worker", lease_s=lease_s)


def hand_back(sessions: sessionmaker[Session], job_id: uuid.UUID, attempt: int) -> bool:
    with transaction(sessions) as session:
        return queries.finish_job(session, job_id=job_id, attempt=attempt, state=JobState.QUEUED)


def lose(sessions: sessionmaker[Session], job_id: uuid.UUID) -> queries.Reconciled:
    """Claim with a tiny lease, let it expire, and run the reconciler's lease pass."""
    assert claim(sessions, job_id, lease_s=SHORT_LEASE_S) is not None
    time.sleep(SHORT_LEASE_S * 4)
    with transaction(sessions) as session:
        return queries.expire_leases(session)


def test_hand_backs_do_not_use_up_attempts(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    # Given a job allowed 2 attempts, handed back on shutdown 3 times in a row
    job_id = new_job(sessions, alice)
    for expected in (1, 2, 3):
        taken = claim(sessions, job_id)
        assert taken is not None and taken.attempt == expected
        assert hand_back(sessions, job_id, taken.attempt)
    # When a worker claims it again, Then it gets it (attempt 4), and the job says why
    fourth = claim(sessions, job_id)
    assert fourth is not None and fourth.attempt == 4
    job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert (job["state"], job["attempt"], job["handbacks"], job["max_attempts"]) == ("running", 4, 3, MAX_ATTEMPTS)
    # And the handed-back attempts are fenced out: attempt 3 can no longer finish the job
    with transaction(sessions) as session:
        assert not queries.finish_job(session, job_id=job_id, attempt=3, state=JobState.SUCCEEDED)
    with transaction(sessions) as session:
        assert queries.finish_job(session, job_id=job_id, attempt=4, state=JobState.SUCCEEDED)


def test_lost_workers_use_up_attempts_even_after_a_hand_back(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a job allowed 2 attempts that was handed back once
    job_id = new_job(sessions, alice)
    taken = claim(sessions, job_id)
    assert taken is not None and hand_back(sessions, job_id, taken.attempt)
    # When its worker is lost (lease expired) once, Then it is requeued
    first = lose(sessions, job_id)
    assert [j for j, _q in first.requeued] == [job_id] and first.failed == []
    # When it is lost a second time, Then it fails: two lost attempts, the hand-back not counted
    second = lose(sessions, job_id)
    assert second.failed == [job_id] and second.requeued == []
    job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert (job["state"], job["attempt"], job["handbacks"]) == ("failed", 3, 1)
    assert job["error"]["code"] == "attempts_exhausted"
    assert "lost 2 time(s); max_attempts (2) is used up" in job["error"]["message"]
    # And nobody can claim it any more
    assert claim(sessions, job_id) is None
