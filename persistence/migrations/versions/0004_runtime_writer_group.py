"""The deployment (topology prefix) of the worker that last wrote each runtime row, so that
deployments sharing one database resume only their own left-behind work.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runtimes") as batch:
        batch.add_column(sa.Column("writer_group", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runtimes") as batch:
        batch.drop_column("writer_group")
