"""Retention: per-tenant settings, and metric rows that stand for a downsampled bucket (its min, max and count)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply (nullable columns without defaults: no table rewrite, even of a large metrics table)."""
    op.add_column("metrics", sa.Column("value_min", sa.Double()))
    op.add_column("metrics", sa.Column("value_max", sa.Double()))
    op.add_column("metrics", sa.Column("samples", sa.Integer()))
    op.add_column("tenants", sa.Column("keep_checkpoints_days", sa.Integer()))
    op.add_column("tenants", sa.Column("keep_full_metrics_days", sa.Integer()))
    op.add_column("tenants", sa.Column("metrics_points_kept", sa.Integer(), nullable=False, server_default="1000"))
    op.add_column("tenants", sa.Column("keep_jobs_days", sa.Integer()))
    op.add_column("jobs", sa.Column("retained_at", sa.DateTime(timezone=True)))
    op.create_check_constraint(
        "ck_tenants_retention",
        "tenants",
        "coalesce(keep_checkpoints_days, 0) >= 0 AND coalesce(keep_full_metrics_days, 0) >= 0 "
        "AND coalesce(keep_jobs_days, 1) >= 1 AND metrics_points_kept >= 10",
    )


def downgrade() -> None:
    """Revert."""
    op.drop_constraint("ck_tenants_retention", "tenants", type_="check")
    op.drop_column("jobs", "retained_at")
    for column in ("keep_jobs_days", "metrics_points_kept", "keep_full_metrics_days", "keep_checkpoints_days"):
        op.drop_column("tenants", column)
    for column in ("samples", "value_max", "value_min"):
        op.drop_column("metrics", column)
