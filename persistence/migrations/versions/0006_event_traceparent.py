"""The trace context of each outbox event: the W3C ``traceparent`` of the decision that made it,
published in the event's AMQP headers (the event's JSON is unchanged). Null for events written
with tracing off, and for every event written before this revision.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column without a default: a catalogue change on PostgreSQL (no rewrite of the
    # table) and a plain ALTER TABLE on SQLite.
    op.add_column("event_outbox", sa.Column("traceparent", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event_outbox") as batch:
        batch.drop_column("traceparent")
