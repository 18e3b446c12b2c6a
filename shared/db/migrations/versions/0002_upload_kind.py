"""uploads.kind: image sets and weights files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 20:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("uploads", sa.Column("kind", sa.String(length=16), nullable=False, server_default="images"))
    op.create_check_constraint("ck_uploads_kind", "uploads", "kind IN ('images', 'weights')")


def downgrade() -> None:
    """Revert."""
    op.drop_constraint("ck_uploads_kind", "uploads", type_="check")
    op.drop_column("uploads", "kind")
