"""Early stopping: the stopped_early state, and why the rule stopped a trial

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BEFORE = "('queued', 'running', 'succeeded', 'failed', 'cancelled')"
AFTER = "('queued', 'running', 'succeeded', 'failed', 'cancelled', 'stopped_early')"


def upgrade() -> None:
    """Apply."""
    op.drop_constraint("ck_jobs_state", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_state", "jobs", f"state IN {AFTER}")
    op.add_column("jobs", sa.Column("early_stop", JSONB()))


def downgrade() -> None:
    """Revert (a stopped trial becomes cancelled, the nearest older state)."""
    op.drop_column("jobs", "early_stop")
    op.execute("UPDATE jobs SET state = 'cancelled' WHERE state = 'stopped_early'")
    op.drop_constraint("ck_jobs_state", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_state", "jobs", f"state IN {BEFORE}")
