"""The worker that last wrote each runtime row, so that work left behind can be resumed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runtimes") as batch:
        batch.add_column(sa.Column("last_writer", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runtimes") as batch:
        batch.drop_column("last_writer")
