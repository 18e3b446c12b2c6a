"""jobs.handbacks: attempts a worker handed back on shutdown, not counted against max_attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    op.add_column("jobs", sa.Column("handbacks", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Revert."""
    op.drop_column("jobs", "handbacks")
