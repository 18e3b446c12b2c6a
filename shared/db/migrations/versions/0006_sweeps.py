"""Sweeps: a sweep row per POST /v1/sweeps, and each trial job's link to it with the params it varies

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "sweeps",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", UUID(as_uuid=True), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("spec", JSONB(), nullable=False),
        sa.Column("objective_metric", sa.String(64), nullable=False),
        sa.Column("objective_mode", sa.String(8), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("objective_mode IN ('min', 'max')", name="ck_sweeps_objective_mode"),
        sa.CheckConstraint("max_parallel >= 1", name="ck_sweeps_max_parallel"),
    )
    op.create_index("ix_sweeps_tenant_created", "sweeps", ["tenant_id", "created_at", "id"])
    op.add_column("jobs", sa.Column("sweep_id", UUID(as_uuid=True), sa.ForeignKey("sweeps.id", ondelete="CASCADE")))
    op.add_column("jobs", sa.Column("sweep_params", JSONB()))
    op.create_index("ix_jobs_sweep", "jobs", ["sweep_id", "state"], postgresql_where=sa.text("sweep_id IS NOT NULL"))


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_jobs_sweep", table_name="jobs")
    op.drop_column("jobs", "sweep_params")
    op.drop_column("jobs", "sweep_id")
    op.drop_index("ix_sweeps_tenant_created", table_name="sweeps")
    op.drop_table("sweeps")
