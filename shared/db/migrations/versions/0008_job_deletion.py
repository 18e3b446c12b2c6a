"""Deletion: a job or upload marked deleted is gone for the API at once; its objects and rows are purged after

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("jobs", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    op.create_index("ix_jobs_deleted", "jobs", ["deleted_at"], postgresql_where=sa.text("deleted_at IS NOT NULL"))
    op.add_column("uploads", sa.Column("deleted_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Revert."""
    op.drop_column("uploads", "deleted_at")
    op.drop_index("ix_jobs_deleted", table_name="jobs")
    op.drop_column("jobs", "deleted_at")
