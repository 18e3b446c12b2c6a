"""Fair-share scheduling: a job's priority, memory estimate and the start of its current attempt, a tenant's
share weight and running limit, the workers' advertised devices, and the indexes the claim's pick reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("jobs", sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("claimed_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("memory_bytes", sa.BigInteger()))
    op.create_table(
        "worker_presence",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("queues", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("device", sa.String(200), nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_free_bytes", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.add_column("tenants", sa.Column("share_weight", sa.Double(), nullable=False, server_default="1"))
    op.add_column("tenants", sa.Column("max_running_jobs", sa.Integer()))
    op.create_check_constraint("ck_tenants_share_weight", "tenants", "share_weight > 0")
    op.create_check_constraint(
        "ck_tenants_max_running_jobs", "tenants", "max_running_jobs IS NULL OR max_running_jobs >= 1"
    )
    op.create_index(
        "ix_jobs_queued_pick",
        "jobs",
        ["queue", "tenant_id", sa.text("priority DESC"), "created_at", "id"],
        postgresql_where=sa.text("state = 'queued'"),
    )
    op.create_index(
        "ix_jobs_queue_usage",
        "jobs",
        ["queue", "tenant_id", "finished_at"],
        postgresql_where=sa.text("claimed_at IS NOT NULL"),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("worker_presence")
    op.drop_column("jobs", "memory_bytes")
    op.drop_index("ix_jobs_queue_usage", table_name="jobs")
    op.drop_index("ix_jobs_queued_pick", table_name="jobs")
    op.drop_constraint("ck_tenants_max_running_jobs", "tenants")
    op.drop_constraint("ck_tenants_share_weight", "tenants")
    op.drop_column("tenants", "max_running_jobs")
    op.drop_column("tenants", "share_weight")
    op.drop_column("jobs", "claimed_at")
    op.drop_column("jobs", "priority")
