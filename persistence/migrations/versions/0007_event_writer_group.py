"""The deployment (writer group) of each outbox event, so that a deployment's relay publishes
only its own events when deployments share a database. Null for events written before this
revision (any relay of the database may publish those, as before).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a catalogue change on PostgreSQL, a plain ALTER TABLE on SQLite.
    op.add_column("event_outbox", sa.Column("writer_group", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event_outbox") as batch:
        batch.drop_column("writer_group")
