"""Storage accounting: the size of each job's checkpoint, and a per-tenant storage quota

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("jobs", sa.Column("checkpoint_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("tenants", sa.Column("max_storage_bytes", sa.BigInteger()))
    op.create_check_constraint(
        "ck_tenants_max_storage_bytes", "tenants", "max_storage_bytes IS NULL OR max_storage_bytes >= 0"
    )


def downgrade() -> None:
    """Revert."""
    op.drop_constraint("ck_tenants_max_storage_bytes", "tenants", type_="check")
    op.drop_column("tenants", "max_storage_bytes")
    op.drop_column("jobs", "checkpoint_bytes")
