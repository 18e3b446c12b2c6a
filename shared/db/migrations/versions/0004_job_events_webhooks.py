"""job_events (the per-job event log behind the SSE stream), webhook deliveries and their attempts,
and each tenant's webhook signing secret

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Each job with its error as the events write it, and its last change as the event time.
JOBS_WITH_ERRORS = """(
    SELECT id, state, attempt, extract(epoch FROM updated_at) AS ts,
           CASE WHEN error_code IS NULL THEN 'null'::jsonb
                ELSE jsonb_build_object('code', error_code, 'message', coalesce(error_message, '')) END AS error
    FROM jobs
) AS jobs_with_errors"""


def upgrade() -> None:
    """Apply."""
    op.add_column("jobs", sa.Column("event_seq", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("webhook_url", sa.Text()))
    op.add_column("jobs", sa.Column("webhook_events", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")))
    op.add_column("jobs", sa.Column("webhook_progress_at", sa.DateTime(timezone=True)))
    op.add_column("tenants", sa.Column("webhook_secret", sa.String(100)))
    op.add_column("tenants", sa.Column("webhook_secret_previous", sa.String(100)))
    op.add_column("tenants", sa.Column("webhook_secret_rotated_at", sa.DateTime(timezone=True)))
    op.create_table(
        "job_events",
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Jobs from before the log: one state event each, and done for those that ended, so that a
    # stream of an old job replays where it stands and a finished one ends.
    op.execute(
        """
        INSERT INTO job_events (job_id, seq, type, data)
        SELECT id, 1, 'state', jsonb_build_object('state', state, 'attempt', attempt, 'error', error, 'ts', ts)
        FROM jobs_with_errors
        """.replace("jobs_with_errors", JOBS_WITH_ERRORS)
    )
    op.execute(
        """
        INSERT INTO job_events (job_id, seq, type, data)
        SELECT id, 2, 'done', jsonb_build_object('state', state, 'error', error, 'ts', ts)
        FROM jobs_with_errors WHERE state IN ('succeeded', 'failed', 'cancelled')
        """.replace("jobs_with_errors", JOBS_WITH_ERRORS)
    )
    op.execute("UPDATE jobs SET event_seq = CASE WHEN state IN ('succeeded', 'failed', 'cancelled') THEN 2 ELSE 1 END")
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("job_id", UUID(as_uuid=True), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_state"),
    )
    op.create_index("ix_webhook_deliveries_job", "webhook_deliveries", ["job_id", "created_at"])
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column(
            "delivery_id",
            UUID(as_uuid=True),
            sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Double()),
        sa.Column("error", sa.Text()),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "attempt"])


def downgrade() -> None:
    """Revert."""
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("job_events")
    for column in ("webhook_secret_rotated_at", "webhook_secret_previous", "webhook_secret"):
        op.drop_column("tenants", column)
    for column in ("webhook_progress_at", "webhook_events", "webhook_url", "event_seq"):
        op.drop_column("jobs", column)
