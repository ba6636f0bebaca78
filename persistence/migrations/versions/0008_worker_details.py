"""Worker details for ``meerkat-worker members`` and for fast hand-overs.

Each heartbeat row records the worker's version, the shard queues it consumed at its last
heartbeat (comma-separated names) and whether it is leaving: a draining worker sets ``leaving``
first, so that the others take its shards at once while it still counts as live (its work left
in flight is not taken over before it has gone). Existing rows get an empty version, no shards
and ``leaving`` false; the columns have server defaults, so workers of the previous version
keep writing their rows during a rolling upgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("version", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("shards", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("leaving", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("leaving")
        batch.drop_column("shards")
        batch.drop_column("version")
