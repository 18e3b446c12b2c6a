"""Webhook deliveries at the database: a claim is exclusive and a tenant has a cap on attempts in
flight, and an address that turned private fails its attempt without sending anything.

These run against Postgres with no worker or beat beside them: the reconciler's sweep would claim
and send the same deliveries the tests hold (they lived in tests/e2e/test_webhooks.py, whose beat
made the first one flaky)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.models import WebhookDelivery
from shared.db.queries import webhooks as queries_webhooks
from shared.db.session import transaction
from tests.conftest import Caller
from tests.support.jobs import queued_job
from workers.runtime import WorkerContext
from workers.webhooks import deliver

pytestmark = pytest.mark.integration


def _deliveries_for(sessions: sessionmaker[Session], caller: Caller, urls: list[str]) -> list[uuid.UUID]:
    """Pending deliveries of a queued job of the caller's, written straight to the database."""
    job_id = uuid.UUID(queued_job(sessions, caller))
    ids = [uuid.uuid4() for _ in urls]
    with transaction(sessions) as session:
        for seq, (delivery_id, url) in enumerate(zip(ids, urls, strict=True), start=1):
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    job_id=job_id,
                    tenant_id=caller.tenant_id,
                    event_seq=seq,
                    event="completed",
                    url=url,
                    body='{"type":"job.completed"}',
                )
            )
    return ids


def test_a_claim_is_exclusive_and_a_tenant_has_a_cap_on_attempts_in_flight(
    sessions: sessionmaker[Session], alice: Caller
) -> None:
    # Given three due deliveries of one tenant, and a cap of two attempts in flight
    first, second, third = _deliveries_for(sessions, alice, ["http://127.0.0.1:9/h"] * 3)

    def claim(delivery_id: uuid.UUID) -> queries.ClaimedDelivery | queries.Refusal:
        with transaction(sessions) as session:
            return queries.claim_delivery(session, delivery_id=delivery_id, hold_s=30.0, per_tenant=2)

    # When the first is claimed twice (a duplicate message), only one claim holds it
    won = claim(first)
    assert isinstance(won, queries.ClaimedDelivery) and won.attempt == 1
    assert claim(first) is queries.Refusal.SKIPPED
    # And with two in flight, a third is refused as busy and deferred to the sweep
    assert isinstance(claim(second), queries.ClaimedDelivery)
    assert claim(third) is queries.Refusal.BUSY
    with transaction(sessions) as session:
        assert third not in queries.deliveries_due(session, grace_s=60.0, limit=100)  # not due yet
    time.sleep(queries_webhooks.BUSY_DEFER_S + 0.2)
    with transaction(sessions) as session:
        due = queries.deliveries_due(session, grace_s=60.0, limit=100)
        assert third in due and first not in due and second not in due  # claimed ones are not re-sent
        assert third not in queries.deliveries_due(session, grace_s=60.0, limit=100)  # marked sent
    # Then once an attempt ends, the tenant has room again
    with transaction(sessions) as session:
        state = queries.finish_attempt(
            session,
            delivery_id=first,
            attempt=1,
            started_at=datetime.now(UTC),
            status_code=204,
            latency_ms=3.0,
            error=None,
            delivered=True,
            retry_in_s=None,
        )
    assert state == "delivered"
    assert isinstance(claim(third), queries.ClaimedDelivery)


def test_an_address_that_turned_private_fails_the_attempt(
    sessions: sessionmaker[Session], settings: Settings, alice: Caller
) -> None:
    # Given a delivery whose URL now points at a private address (as after a DNS rebind)
    (delivery_id,) = _deliveries_for(sessions, alice, ["http://10.0.0.1/hook"])
    ctx = WorkerContext.build(settings.model_copy(update={"worker_name": "webhook-test"}))
    # When a worker attempts it
    state = deliver(ctx, delivery_id)
    # Then nothing was sent: the attempt failed with "address not allowed" and a retry is scheduled
    assert state == "pending"
    with sessions() as session:
        attempts = queries.list_deliveries(session, job_id=_job_of(session, delivery_id), limit=10, cursor=None)
    (record,) = attempts.items
    (attempt,) = record.attempts
    assert attempt.status_code is None and attempt.error.startswith("address not allowed")
    assert record.delivery.attempts == 1 and record.delivery.state == "pending"


def _job_of(session: Session, delivery_id: uuid.UUID) -> uuid.UUID:
    job_id: uuid.UUID = session.execute(
        text("SELECT job_id FROM webhook_deliveries WHERE id = :d"), {"d": delivery_id}
    ).scalar_one()
    return job_id
