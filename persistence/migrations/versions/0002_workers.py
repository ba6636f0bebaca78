"""Worker heartbeats: the live workers over which the shard queues are spread.

Revision ID: 0002
Revises: 0001
Create Date: 2024-07-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    op.create_index(
        op.f("ix_workers_group_name_last_seen"), "workers", ["group_name", "last_seen"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_workers_group_name_last_seen"), table_name="workers")
    op.drop_table("workers")
