"""Jobs written straight to the database, for tests that must not touch the API (or a rate limit) to make one."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.session import transaction
from tests.conftest import Caller

SMALL_GAN_PARAMS = {"dataset": "digits", "steps": 10}


def queued_job(sessions: sessionmaker[Session], caller: Caller) -> str:
    """A queued gan.train job of the caller's, written straight to the database; returns its id."""
    with transaction(sessions) as session:
        job, _created = queries.create_job(
            session,
            tenant_id=caller.tenant_id,
            job_type="gan.train",
            params=dict(SMALL_GAN_PARAMS),
            queue="gpu",
            total=10,
            max_attempts=3,
            idempotency_key=None,
        )
        return str(job.id)
