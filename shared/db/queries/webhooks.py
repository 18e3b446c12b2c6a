"""Webhook deliveries: the claim and the end of an attempt (the ``cpu`` worker's), the sweep of
deliveries due for a (re)send (the reconciler's), the API's listing, and each tenant's signing secret.

A delivery is an outbox row written with its event (shared/db/queries/events.py). An attempt claims
it with one UPDATE that succeeds only while it is pending, due and not claimed by a live attempt, and
that increments ``attempts`` (the attempt's number, and the fence its end is written under). Claims of
one tenant's deliveries are serialised by a transaction-scoped advisory lock, so the per-tenant cap on
attempts in flight is exact.
"""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.db.models import Tenant, WebhookAttempt, WebhookDelivery
from shared.db.queries.api import Page
from shared.errors import InvalidInput, NotFound
from shared.webhooks import PREVIOUS_SECRET_VALID, new_secret

ADVISORY_LOCK_NAMESPACE = 0x5748  # "WH": the first key of pg_advisory_xact_lock(int, int) for tenant claims
ERROR_MAX_CHARS = 500
BUSY_DEFER_S = 1.0  # a claim refused by the tenant's cap waits this long, then the sweep re-sends it


# --- secrets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSecret:
    """A tenant's signing secret and, for a day after a rotation, the previous one."""

    current: str
    previous: str | None
    rotated_at: datetime | None

    @property
    def previous_valid_until(self) -> datetime | None:
        """Until when the previous secret still signs; None when there is none."""
        if self.previous is None or self.rotated_at is None:
            return None
        return self.rotated_at + PREVIOUS_SECRET_VALID


def _secret_of(row: Tenant) -> WebhookSecret:
    assert row.webhook_secret is not None
    return WebhookSecret(
        current=row.webhook_secret, previous=row.webhook_secret_previous, rotated_at=row.webhook_secret_rotated_at
    )


def ensure_webhook_secret(session: Session, *, tenant_id: uuid.UUID) -> WebhookSecret:
    """The tenant's signing secret, created on first use."""
    session.execute(
        text("UPDATE tenants SET webhook_secret = :secret WHERE id = :tenant AND webhook_secret IS NULL"),
        {"secret": new_secret(), "tenant": tenant_id},
    )
    row = session.scalar(select(Tenant).where(Tenant.id == tenant_id).execution_options(populate_existing=True))
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return _secret_of(row)


def rotate_webhook_secret(session: Session, *, tenant_id: uuid.UUID) -> WebhookSecret:
    """A new signing secret; the one it replaces keeps signing for a day (an older previous one is dropped)."""
    row = session.execute(
        text(
            """
            UPDATE tenants SET webhook_secret_previous = webhook_secret, webhook_secret = :secret,
                   webhook_secret_rotated_at = CASE WHEN webhook_secret IS NULL THEN NULL ELSE now() END
            WHERE id = :tenant
            RETURNING webhook_secret, webhook_secret_previous, webhook_secret_rotated_at
            """
        ),
        {"secret": new_secret(), "tenant": tenant_id},
    ).one_or_none()
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return WebhookSecret(
        current=row.webhook_secret, previous=row.webhook_secret_previous, rotated_at=row.webhook_secret_rotated_at
    )


# --- the worker: claim and finish ----------------------------------------------------------


class Refusal(enum.Enum):
    """Why a claim got nothing."""

    SKIPPED = "skipped"  # gone, done, not due yet, or held by a live attempt
    BUSY = "busy"  # its tenant has as many attempts in flight as allowed: deferred to the sweep


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this attempt holds until ``claimed_until``: what to send, where, and with which keys."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    body: str
    attempt: int
    secret: WebhookSecret
    now: datetime


def claim_delivery(
    session: Session, *, delivery_id: uuid.UUID, hold_s: float, per_tenant: int
) -> ClaimedDelivery | Refusal:
    """Claim a pending, due, unclaimed delivery for ``hold_s`` (attempts + 1), within the tenant's cap."""
    tenant_id = session.scalar(select(WebhookDelivery.tenant_id).where(WebhookDelivery.id == delivery_id))
    if tenant_id is None:
        return Refusal.SKIPPED
    session.execute(
        text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:tenant))"),
        {"namespace": ADVISORY_LOCK_NAMESPACE, "tenant": str(tenant_id)},
    )
    claimable = """
        id = :id AND state = 'pending' AND next_attempt_at <= now()
        AND (claimed_until IS NULL OR claimed_until <= now())
    """
    row = session.execute(
        text(
            f"""
            UPDATE webhook_deliveries
            SET claimed_until = now() + make_interval(secs => :hold), attempts = attempts + 1
            WHERE {claimable}
              AND (SELECT count(*) FROM webhook_deliveries busy
                   WHERE busy.tenant_id = :tenant AND busy.state = 'pending' AND busy.claimed_until > now()) < :cap
            RETURNING id, tenant_id, url, body, attempts, now() AS now
            """  # noqa: S608 - the interpolated text is a constant above, never input
        ),
        {"id": delivery_id, "hold": hold_s, "tenant": tenant_id, "cap": per_tenant},
    ).one_or_none()
    if row is None:
        deferred = session.execute(
            text(
                f"""
                UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => :defer)
                WHERE {claimable}
                RETURNING id
                """  # noqa: S608 - as above
            ),
            {"id": delivery_id, "defer": BUSY_DEFER_S},
        ).one_or_none()
        return Refusal.BUSY if deferred is not None else Refusal.SKIPPED
    return ClaimedDelivery(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        body=row.body,
        attempt=row.attempts,
        secret=ensure_webhook_secret(session, tenant_id=row.tenant_id),
        now=row.now,
    )


def finish_attempt(
    session: Session,
    *,
    delivery_id: uuid.UUID,
    attempt: int,
    started_at: datetime,
    status_code: int | None,
    latency_ms: float | None,
    error: str | None,
    delivered: bool,
    retry_in_s: float | None,
) -> str | None:
    """Record an attempt; the delivery becomes delivered, pending (again in ``retry_in_s``) or failed.

    The delivery changes only if no later attempt claimed it (``attempts`` is still ``attempt``);
    returns its new state, or None when it did not change.
    """
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            attempt=attempt,
            started_at=started_at,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error[:ERROR_MAX_CHARS] if error else None,
        )
    )
    state = "delivered" if delivered else ("pending" if retry_in_s is not None else "failed")
    return session.execute(
        text(
            """
            UPDATE webhook_deliveries
            SET state = :state, claimed_until = NULL,
                next_attempt_at = CASE WHEN :pending THEN clock_timestamp() + make_interval(secs => :retry_in)
                                       ELSE next_attempt_at END,
                finished_at = CASE WHEN :pending THEN NULL ELSE clock_timestamp() END
            WHERE id = :id AND attempts = :attempt AND state = 'pending'
            RETURNING state
            """
        ),
        {
            "id": delivery_id,
            "attempt": attempt,
            "state": state,
            "pending": state == "pending",
            "retry_in": retry_in_s or 0.0,
        },
    ).scalar_one_or_none()


# --- the reconciler's sweep ------------------------------------------------------------------


def deliveries_due(session: Session, *, grace_s: float, limit: int) -> list[uuid.UUID]:
    """Pending, due, unclaimed deliveries whose message is not on its way; marks them sent now.

    A message is on its way when it was sent (``sent_at``, or at creation by the writer) after the
    delivery became due, less than ``grace_s`` ago. A failed attempt moves ``next_attempt_at`` past
    the last send, so a retry is sent on the first pass after it is due.
    """
    rows = session.execute(
        text(
            """
            UPDATE webhook_deliveries SET sent_at = now()
            WHERE id IN (
                SELECT id FROM webhook_deliveries
                WHERE state = 'pending' AND next_attempt_at <= now()
                  AND (claimed_until IS NULL OR claimed_until <= now())
                  AND (coalesce(sent_at, created_at) < next_attempt_at
                       OR coalesce(sent_at, created_at) < now() - make_interval(secs => :grace))
                ORDER BY next_attempt_at
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
            )
            RETURNING id
            """
        ),
        {"grace": grace_s, "limit": limit},
    ).all()
    return [r.id for r in rows]


# --- the API: a job's deliveries -------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery and its attempts, oldest first."""

    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def _decode_seq_cursor(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not a cursor this API returned", field="cursor") from exc


def list_deliveries(session: Session, *, job_id: uuid.UUID, limit: int, cursor: str | None) -> Page:
    """A job's deliveries in event order with their attempts (DeliveryRecord items); the cursor is the last event id."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    if cursor is not None:
        query = query.where(WebhookDelivery.event_seq > _decode_seq_cursor(cursor))
    rows = list(session.scalars(query.order_by(WebhookDelivery.event_seq, WebhookDelivery.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    attempts = _attempts_of(session, [r.id for r in rows])
    items = [DeliveryRecord(delivery=r, attempts=attempts.get(r.id, [])) for r in rows]
    next_cursor = base64.urlsafe_b64encode(str(rows[-1].event_seq).encode()).decode() if more and rows else None
    return Page(items=items, next_cursor=next_cursor)


def _attempts_of(session: Session, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[WebhookAttempt]]:
    found: dict[uuid.UUID, list[WebhookAttempt]] = {}
    if not delivery_ids:
        return found
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt, WebhookAttempt.id)
    )
    for attempt in session.scalars(query):
        found.setdefault(attempt.delivery_id, []).append(attempt)
    return found
